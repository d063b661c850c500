"""A target whose hot frames are a <lambda>, a <genexpr>, a unicode-named function and <module>.

Usage: python names.py SECONDS. Prints "ready" when it starts. The loop runs at module level,
so the outermost frame is <module>.
"""
import sys
import time

square_sum = lambda n: sum(i * i for i in range(n))  # noqa: E731 - the <lambda> frame is the point


def 計算(n):
    return square_sum(n)


end = time.time() + (float(sys.argv[1]) if len(sys.argv) > 1 else 30.0)
print("ready", flush=True)
while time.time() < end:
    計算(20000)
