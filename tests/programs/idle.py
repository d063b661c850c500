"""A Python process that only sleeps; extra arguments are a tag for command-line matching.

Usage: python idle.py SECONDS [TAG...]. Prints "ready" when it starts.
"""
import sys
import time

print("ready", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0)
