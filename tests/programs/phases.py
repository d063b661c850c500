"""A target whose work follows the wall clock: ``even_second`` runs during even Unix seconds,
``odd_second`` during odd ones. Lets a test check that samples land in the right bucket.

Usage: python phases.py SECONDS. Prints "ready" when it starts.
"""
import sys
import time


def spin_until(t_end):
    x = 0
    while time.time() < t_end:
        x += 1
    return x


def even_second(t_end):
    return spin_until(t_end)


def odd_second(t_end):
    return spin_until(t_end)


def main():
    end = time.time() + (float(sys.argv[1]) if len(sys.argv) > 1 else 30.0)
    print("ready", flush=True)
    while time.time() < end:
        now = time.time()
        boundary = int(now) + 1
        (even_second if int(now) % 2 == 0 else odd_second)(boundary)


if __name__ == "__main__":
    main()
