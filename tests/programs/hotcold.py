"""One thread that spends 70% of its CPU time in hot_function and 30% in cold_function.

Slices are short (7 ms and 3 ms) so any sampling rate sees the same shares.
"""
import time


def spin(seconds):
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1
    return x


def hot_function():
    return spin(0.007)


def cold_function():
    return spin(0.003)


print("ready", flush=True)
while True:
    hot_function()
    cold_function()
