"""Per-second sample counts from rolling chrometrace recordings, with active and idle apart.

Pure functions and one accumulator; no I/O. Times are Unix seconds; a bucket is the Unix
second ``floor(t)``.

How a recording becomes counts. py-spy's chrometrace says, per thread, which stack the
thread had from each change on (see :mod:`.parse`); it does not say how many samples
fell between two changes. Each stretch of a stack is therefore spread over the buckets it
overlaps in proportion to time, at ``scale`` samples per thread-second, where ``scale`` is the
recording's own sample count (py-spy's ``Samples:``) divided by the thread-seconds it covered.
Totals then equal what py-spy really sampled; the split between buckets is by time. Counts
stay fractional until a bucket is complete, then are rounded once (largest remainder, per
thread) so a thread's integer total in a bucket matches its fractional total.

Recordings overlap at hand-over. The accumulator keeps ``covered_until`` (the end of the
last recording taken) and uses a new recording only from there on, so no second is counted
twice and any gap between recordings stays visible as uncovered time.

Active versus idle. No py-spy output format carries its per-sample ``active`` flag, so the
split comes from the kernel: the per-thread CPU time read once a second
(:mod:`.thread_cpu`) gives each thread's running share of each bucket, and that share of
the thread's samples in the bucket is marked active. Which of its stacks get the active
samples: stacks whose leaf is not a known wait first (in proportion), then the waits.
Without an OS thread id (py-spy prints one only for Python >= 3.11) or without readings,
the leaf-frame rule alone decides, which is what py-spy itself falls back to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from infersight.daemon.stacks.parse import Timeline
from infersight.storage.model import Frame, SamplingStat, StackSample

Stack = tuple[Frame, ...]
_MAX_STACKS = 20000            # distinct stacks remembered before unused ones are forgotten
ShareFn = Callable[[int, int], "float | None"]         # (tid, bucket) -> running share 0..1
GoneFn = Callable[[int, float], "float | None"]        # (os tid, after) -> time it was gone

# Leaf functions that block rather than run: (name, file fragment or "" for any file).
_WAITS: tuple[tuple[str, str], ...] = (
    ("wait", ""), ("wait_for", ""), ("_wait_for_tstate_lock", ""), ("join", "threading"),
    ("select", ""), ("poll", ""), ("epoll", ""), ("sleep", "asyncio"), ("accept", ""),
    ("recv", ""), ("recv_into", ""), ("recvfrom", ""), ("recv_multipart", ""), ("recv_pyobj", ""),
    ("recv_json", ""), ("recv_string", ""), ("_recv", ""), ("_recv_bytes", ""),
    ("readinto", "socket"), ("read", "ssl"), ("get", "queue"), ("_try_wait", "subprocess"),
    ("communicate", "subprocess"), ("_communicate", "subprocess"),
)


def is_wait_frame(frame: Frame) -> bool:
    """True when ``frame`` (a leaf) is a known blocking wait: threading, selectors, queues, sockets, zmq."""
    base = frame.function.rsplit(".", 1)[-1]
    return any(base == name and (not where or where in frame.file) for name, where in _WAITS)


@dataclass(slots=True)
class ThreadCounts:
    name: str
    os_tid_known: bool
    counts: dict[int, float] = field(default_factory=dict)     # stack id (BucketAccumulator.stacks) -> count


@dataclass(slots=True)
class BucketData:
    """What is known of one target in one bucket, still fractional."""

    bucket: int
    covered_s: float = 0.0
    errors: int = 0
    threads: dict[int, ThreadCounts] = field(default_factory=dict)


@dataclass(slots=True)
class RecordingUse:
    """What one recording contributed: the wall interval used and the samples in it."""

    used_from: float | None
    used_to: float | None
    samples: float
    scale: float


class BucketAccumulator:
    """Fractional counts of one target; complete buckets are taken out in time order.

    Stacks are kept as ids into ``stacks`` (one entry per distinct stack seen), so counting
    hashes small integers rather than tuples of frames.
    """

    def __init__(self) -> None:
        self.covered_until: float | None = None
        self.stacks: list[Stack] = []
        self.waits: list[bool] = []
        self._ids: dict[Stack, int] = {}
        self._buckets: dict[int, BucketData] = {}

    def stack_id(self, stack: Stack) -> int:
        sid = self._ids.get(stack)
        if sid is None:
            sid = self._ids[stack] = len(self.stacks)
            self.stacks.append(stack)
            self.waits.append(bool(stack) and is_wait_frame(stack[-1]))
        return sid

    def add_recording(self, timeline: Timeline, origin_wall: float, *, samples: int | None, errors: int | None,
                      rate_hz: float, gone_at: GoneFn | None = None) -> RecordingUse:
        """Add one parsed recording whose ``ts`` 0 is ``origin_wall``; returns what was used."""
        if timeline.first_us is None or timeline.last_us is None:
            return RecordingUse(None, None, 0.0, 0.0)
        if len(self.stacks) > _MAX_STACKS:
            self._compact()
        first = origin_wall + timeline.first_us / 1e6
        last = origin_wall + timeline.last_us / 1e6
        used_from = first if self.covered_until is None else max(first, self.covered_until)
        thread_seconds = sum(t1 - t0 for _, _, t0, t1 in _segments(timeline, origin_wall, last, gone_at, 0.0))
        scale = float(rate_hz)
        if samples is not None and thread_seconds > 0:
            # py-spy's own count is the truth for totals; bounded so a tiny recording with
            # an odd count cannot produce absurd per-second figures.
            scale = min(samples / thread_seconds, 2.0 * rate_hz)
        # py-spy samples at random (exponential) intervals, so a stack change is seen on
        # average one sampling interval after it happened: move observed changes back by it.
        lag = 1.0 / scale if scale > 0 else 0.0
        segments = list(_segments(timeline, origin_wall, last, gone_at, lag))
        used = 0.0
        if last > used_from:
            ids = [self.stack_id(st) for st in timeline.stacks]
            for track, stack, t0, t1 in segments:
                stack = ids[stack]
                used += self._spread(track.tid, track.name, track.label is not None and track.label.os_tid is not None,
                                     stack, max(t0, used_from), min(t1, last), scale)
            parts = list(_bucket_parts(used_from, last))
            span = last - first
            # py-spy reports one error count per recording: spread it over the buckets used,
            # by time, in whole errors.
            share_errors = round((errors or 0) * (last - used_from) / span) if span > 0 else 0
            spread = largest_remainder([share_errors * p / (last - used_from) for _, p in parts], share_errors)
            for (b, part), errs in zip(parts, spread):
                data = self._bucket(b)
                data.covered_s += part
                data.errors += errs
            self.covered_until = last
            return RecordingUse(used_from, last, used, scale)
        return RecordingUse(None, None, 0.0, scale)

    def _compact(self) -> None:
        """Forget stacks no pending bucket uses (taken buckets have been finalized by now)."""
        old_stacks, old_waits = self.stacks, self.waits
        self.stacks, self.waits, self._ids = [], [], {}
        for data in self._buckets.values():
            for thread in data.threads.values():
                thread.counts = {self.stack_id(old_stacks[s]): n for s, n in thread.counts.items()}
        del old_waits

    def take_complete(self) -> list[BucketData]:
        """Buckets that end at or before ``covered_until``; the bucket still filling stays."""
        if self.covered_until is None:
            return []
        limit = math.floor(self.covered_until)
        done = sorted(b for b in self._buckets if b < limit)
        return [self._buckets.pop(b) for b in done]

    def take_all(self) -> list[BucketData]:
        """Every bucket, complete or not (the target exited or sampling stopped)."""
        done = sorted(self._buckets)
        return [self._buckets.pop(b) for b in done]

    def _bucket(self, b: int) -> BucketData:
        data = self._buckets.get(b)
        if data is None:
            data = self._buckets[b] = BucketData(bucket=b)
        return data

    def _spread(self, tid: int, name: str, os_known: bool, stack: int, t0: float, t1: float, scale: float) -> float:
        total = 0.0
        for b, part in _bucket_parts(t0, t1):
            data = self._bucket(b)
            thread = data.threads.get(tid)
            if thread is None:
                thread = data.threads[tid] = ThreadCounts(name=name, os_tid_known=os_known)
            thread.name = name or thread.name
            value = part * scale
            thread.counts[stack] = thread.counts.get(stack, 0.0) + value
            total += value
        return total


def _segments(timeline: Timeline, origin_wall: float, last: float, gone_at: GoneFn | None, lag: float):
    """(track, stack index, t0, t1) in wall time for every non-empty stretch of every thread.

    Every change but a thread's first sample and py-spy's closing of all slices (an empty
    stack) is moved ``lag`` seconds earlier, never before the previous change.
    """
    for track in timeline.tracks:
        changes = track.changes
        os_tid = track.label.os_tid if track.label is not None else None
        times: list[float] = []
        for i, (ts, stack) in enumerate(changes):
            t = origin_wall + ts / 1e6
            if i > 0 and stack:
                t = max(times[-1], t - lag)
            times.append(t)
        for i, (ts, stack) in enumerate(changes):
            if not stack:
                continue
            t0 = times[i]
            t1 = times[i + 1] if i + 1 < len(changes) else last
            if i + 2 >= len(changes) and gone_at is not None and os_tid is not None:
                # py-spy closes a vanished thread's slice only when it writes the file; the
                # per-second thread listing says when the thread really went away.
                gone = gone_at(os_tid, t0)
                if gone is not None:
                    t1 = min(t1, max(t0, gone))
            if t1 > t0:
                yield track, stack, t0, t1


def _bucket_parts(t0: float, t1: float):
    """(bucket, seconds) pieces of [t0, t1) cut at whole seconds."""
    b = math.floor(t0)
    while t0 < t1:
        end = min(t1, b + 1.0)
        if end > t0:
            yield b, end - t0
        t0 = end
        b += 1


def largest_remainder(values: list[float], total: int) -> list[int]:
    """Integers that sum to ``total``, each the floor of its value plus at most one."""
    floors = [math.floor(v) for v in values]
    missing = total - sum(floors)
    order = sorted(range(len(values)), key=lambda i: values[i] - floors[i], reverse=True)
    for i in order[:max(missing, 0)]:
        floors[i] += 1
    return floors


def split_active(counts: dict[int, int], share: float | None, waits: Sequence[bool]) -> list[tuple[int, bool, int]]:
    """Split integer counts of one thread in one bucket into (stack id, active, count) rows.

    ``share`` is the thread's running share of the bucket (0..1) or None when unknown; then
    stacks with a waiting leaf (``waits[id]``) are idle and the others active.
    """
    stacks = [s for s, n in counts.items() if n > 0]
    if share is None:
        return [(s, not waits[s], counts[s]) for s in stacks]
    total = sum(counts[s] for s in stacks)
    want = min(total, round(total * max(0.0, min(1.0, share))))
    active: dict[int, int] = {}
    for tier in ([s for s in stacks if not waits[s]], [s for s in stacks if waits[s]]):
        room = sum(counts[s] for s in tier)
        give = min(want, room)
        if give and room:
            for s, n in zip(tier, largest_remainder([give * counts[s] / room for s in tier], give)):
                active[s] = n
        want -= give
    rows: list[tuple[int, bool, int]] = []
    for s in stacks:
        a = active.get(s, 0)
        if a:
            rows.append((s, True, a))
        if counts[s] - a:
            rows.append((s, False, counts[s] - a))
    return rows


def finalize(buckets: list[BucketData], acc: BucketAccumulator, pid: int, start_time: float, *,
             share: ShareFn | None = None, include_idle: bool = True) -> tuple[list[StackSample], list[SamplingStat]]:
    """Round complete buckets of ``acc`` into StackSample rows (one per bucket, thread, stack, active)."""
    samples: list[StackSample] = []
    stats: list[SamplingStat] = []
    for data in buckets:
        taken = 0
        for tid, thread in data.threads.items():
            stacks = list(thread.counts)
            values = [thread.counts[s] for s in stacks]
            ints = dict(zip(stacks, largest_remainder(values, round(sum(values)))))
            taken += sum(ints.values())
            thread_share = share(tid, data.bucket) if (share is not None and thread.os_tid_known) else None
            for stack, active, count in split_active(ints, thread_share, acc.waits):
                if active or include_idle:
                    samples.append(StackSample(bucket=data.bucket, pid=pid, start_time=start_time, tid=tid,
                                               thread_name=thread.name, frames=acc.stacks[stack], active=active,
                                               count=count))
        if data.covered_s > 0 or taken:
            stats.append(SamplingStat(bucket=data.bucket, pid=pid, start_time=start_time, samples=taken,
                                      errors=data.errors))
    return samples, stats
