"""A multi-threaded target: busy, sleeping, queue-waiting and lock-contending threads.

Usage: python threads.py SECONDS. Once every thread runs it prints one JSON line:
{"ready": true, "threads": {NAME: OS thread id}}. Thread names include a unicode one; the
busy work runs in a function with a unicode name.
"""
import json
import queue
import sys
import threading
import time


def rechnen_über(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def busy(stop):
    while not stop.is_set():
        rechnen_über(5000)


def sleeper(stop):
    while not stop.is_set():
        time.sleep(0.05)


def waiter(stop, q):
    while not stop.is_set():
        try:
            q.get(timeout=0.2)
        except queue.Empty:
            pass


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    stop = threading.Event()
    q = queue.Queue()
    threads = [
        threading.Thread(target=busy, args=(stop,), name="busy-1"),
        threading.Thread(target=sleeper, args=(stop,), name="schläfer"),
        threading.Thread(target=waiter, args=(stop, q), name="queue-waiter"),
    ]
    for t in threads:
        t.start()
    ids = {t.name: t.native_id for t in threads}
    ids[threading.current_thread().name] = threading.get_native_id()
    print(json.dumps({"ready": True, "threads": ids}), flush=True)
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
