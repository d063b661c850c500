"""A Python parent with a Python child and a non-Python child (for descendant discovery).

Usage: python spawner.py SECONDS TAG. Prints one JSON line {"python_child": PID,
"other_child": PID} once both children run; ends them when it ends.
"""
import json
import subprocess
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
idle = __file__.replace("spawner.py", "idle.py")
py_child = subprocess.Popen([sys.executable, idle, str(seconds), "child-of", sys.argv[2]], stdout=subprocess.PIPE)
py_child.stdout.readline()
other = subprocess.Popen(["sleep", str(seconds)])
print(json.dumps({"python_child": py_child.pid, "other_child": other.pid}), flush=True)
try:
    time.sleep(seconds)
finally:
    py_child.kill()
    other.kill()
