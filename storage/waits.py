"""Which sampled stacks are pure waits: the leaf frames where a thread waits for something
other than its own work or the GPU (an event loop's poll, a selector, a condition, queue or
socket wait, an idle pool worker, a sleep).

Pure pattern data and two small predicates, no SQL: the flame graph's ``waits`` filter
(storage/stacks.py) hides or keeps these stacks, together with the samples py-spy found
idle. The analysis (daemon/analysis/threads.py) splits a thread's samples with the same
patterns: a wait here is never a culprit there. GPU waits (``torch.cuda.synchronize``) and collective waits are not in it: they say
what the GPU or the other ranks did, which a person reading a flame graph wants to see.
"""
from __future__ import annotations

import re

# leaf ``file:function`` of frames where a thread waits for something other than the GPU
WAIT_LEAF = re.compile("|".join((
    r"asyncio/runners\.py:Runner\.run$", r"asyncio/base_events\.py:.*(run_forever|_run_once|select)",
    r"uvloop/.*:run$", r"selectors\.py:", r"threading\.py:(Condition|Event|Semaphore|Barrier)\.wait",
    r"threading\.py:Thread\.join", r"threading\.py:_wait_for_tstate_lock", r"queue\.py:.*\.get$",
    r"concurrent/futures/.*:(_worker|wait|result)$", r"multiprocessing/(connection|queues|synchronize)\.py:",
    r"multiprocessing/popen_\w+\.py:.*wait", r"zmq/.*:(poll|recv\w*|_recv\w*)$", r"socket\.py:.*(accept|recv)",
    r"ssl\.py:.*(read|recv)", r"time:sleep$", r"subprocess\.py:.*(wait|communicate)",
)))

# what the ``waits`` filter of a profile may say
WAITS_MODES = ("show", "hide", "only")


def leaf_key(path) -> str:
    """``file:function`` of a stack's leaf ('' for an empty stack); frames are (function, file, line)."""
    return f"{path[-1][1]}:{path[-1][0]}" if path else ""


def is_wait_leaf(path) -> bool:
    """Whether the stack's leaf frame is a wait (module docstring)."""
    return bool(path) and bool(WAIT_LEAF.search(leaf_key(path)))
