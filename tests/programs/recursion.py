"""A target that spends its time at the bottom of a deep recursion.

Usage: python recursion.py SECONDS DEPTH. Prints "ready" when it starts.
"""
import sys
import time


def descend(depth, end):
    if depth == 0:
        x = 0
        while time.time() < end:
            x += 1
        return x
    return descend(depth - 1, end)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    sys.setrecursionlimit(depth + 100)
    print("ready", flush=True)
    descend(depth, time.time() + seconds)


if __name__ == "__main__":
    main()
