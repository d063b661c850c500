"""A process tree shaped like an engine's: a parent and children with chosen command lines.

usage: layout.py SECONDS SPEC [TAG...]

SPEC is hex-encoded JSON, a list of argument lists; each becomes a child ``python idle.py
SECONDS ARGS...`` (hex, so the children's words do not show in the parent's command line).
The children die with the parent (PR_SET_PDEATHSIG). Prints one JSON line ``{"children":
[PID, ...]}`` once every child runs.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

seconds, spec = sys.argv[1], json.loads(bytes.fromhex(sys.argv[2]))
idle = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle.py")
children = [subprocess.Popen([sys.executable, idle, seconds, *args], stdout=subprocess.PIPE,
                             preexec_fn=lambda: ctypes.CDLL(None).prctl(1, signal.SIGKILL))
            for args in spec]
for child in children:
    child.stdout.readline()
print(json.dumps({"children": [c.pid for c in children]}), flush=True)
time.sleep(float(seconds))
