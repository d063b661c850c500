"""XID and other critical NVML events, read by one thread and handed over as Events.

NVML delivers events through ``nvmlEventSetWait_v2``, a blocking wait: a daemon thread
waits in slices of ``wait_ms`` so :meth:`NvmlEventListener.stop` returns within about one
slice, then frees the event set (never while the thread may still be inside the wait). The
collector drains finished events each tick. Nothing here raises into the caller: problems
are queued as messages.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Sequence

from infersight.daemon.gpu.nvml import (
    EVENT_DOUBLE_BIT_ECC,
    EVENT_DRAM_RETIREMENT,
    EVENT_DRAM_RETIREMENT_FAILURE,
    EVENT_FATAL_POISON,
    EVENT_GPU_RECOVERY_ACTION,
    EVENT_GPU_UNAVAILABLE,
    EVENT_MIG_CONFIG_CHANGE,
    EVENT_NON_FATAL_POISON,
    EVENT_SBE_STORM,
    EVENT_XID,
    EventData,
    NvmlError,
    NvmlTimeout,
)
from infersight.storage.model import Event

log = logging.getLogger(__name__)

# event type bit -> (Event.kind, severity); XID severity depends on the XID (below)
EVENT_KINDS: dict[int, tuple[str, str]] = {
    EVENT_XID: ("xid", "critical"),
    EVENT_DOUBLE_BIT_ECC: ("ecc_uncorrected", "critical"),
    EVENT_SBE_STORM: ("ecc_sbe_storm", "warning"),
    EVENT_DRAM_RETIREMENT: ("dram_retirement", "warning"),
    EVENT_DRAM_RETIREMENT_FAILURE: ("dram_retirement_failure", "critical"),
    EVENT_NON_FATAL_POISON: ("poison_contained", "warning"),
    EVENT_FATAL_POISON: ("poison_fatal", "critical"),
    EVENT_GPU_UNAVAILABLE: ("gpu_unavailable", "critical"),
    EVENT_GPU_RECOVERY_ACTION: ("gpu_recovery_action", "critical"),
    EVENT_MIG_CONFIG_CHANGE: ("mig_config_change", "info"),
}
DEFAULT_MASK = sum(EVENT_KINDS)   # distinct bits: the sum is their union

# NVIDIA's XID catalogue, the ones an inference host meets; others are reported by number.
XID_MEANINGS: dict[int, str] = {
    13: "graphics engine exception", 31: "GPU memory page fault", 43: "GPU stopped processing",
    45: "preemptive cleanup after earlier errors", 48: "double-bit ECC error",
    61: "internal micro-controller breakpoint/warning", 62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recorded", 64: "ECC page retirement or row remapping failed",
    74: "NVLink error", 79: "GPU has fallen off the bus", 92: "high single-bit ECC error rate",
    94: "contained ECC error", 95: "uncontained ECC error", 119: "GSP RPC timeout", 120: "GSP error",
}
# XIDs that usually mean the application faulted, not the GPU
APPLICATION_XIDS = frozenset({13, 31, 43, 45})


def event_from(data: EventData, gpu: int | None, host: str, t: float) -> Event:
    """The Event for one NVML event (pure). Each occurrence gets its own id."""
    kind, severity = EVENT_KINDS.get(data.event_type, (f"nvml_event_{data.event_type:#x}", "warning"))
    where = f"GPU {gpu}" if gpu is not None else data.uuid
    if data.gpu_instance is not None:
        where += f" (MIG GPU instance {data.gpu_instance})"
    evidence: dict[str, Any] = {"uuid": data.uuid, "event_type": data.event_type, "event_data": data.data}
    if data.gpu_instance is not None:
        evidence["gpu_instance"] = data.gpu_instance
        evidence["compute_instance"] = data.compute_instance
    if data.event_type == EVENT_XID:
        meaning = XID_MEANINGS.get(data.data, "see NVIDIA's XID catalogue")
        severity = "warning" if data.data in APPLICATION_XIDS or data.data not in XID_MEANINGS else "critical"
        summary = f"XID {data.data} on {where}: {meaning}"
        evidence["xid"] = data.data
    else:
        summary = f"{kind.replace('_', ' ')} on {where}"
    return Event(id=f"{kind}:{host}:{data.uuid}:{data.data}:{t:.6f}", kind=kind, start=t, end=t, host=host,
                 gpu=gpu, severity=severity, summary=summary, evidence=evidence)


class NvmlEventListener:
    """Registers ``devices`` (gpu id, NVML handle, UUID) for ``mask`` and collects their events."""

    def __init__(self, nvml: Any, devices: Sequence[tuple[int, Any, str]], host: str, *,
                 mask: int = DEFAULT_MASK, wait_ms: int = 250, max_pending: int = 1000,
                 clock: Callable[[], float] = time.time) -> None:
        self._nvml = nvml
        self._devices = list(devices)
        self._gpu_of = {uuid: gpu for gpu, _, uuid in self._devices}
        self._host = host
        self._mask = mask
        self._wait_ms = wait_ms
        self._clock = clock
        self._pending: collections.deque[Event] = collections.deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_set: Any = None
        self._problems: list[str] = []
        self._said: set[str] = set()
        self.dropped = 0
        self.registered: list[int] = []

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Create the event set, register every device that supports any of ``mask`` and start
        the thread. False (with problems queued) when no device could be registered."""
        try:
            self._event_set = self._nvml.event_set_create()
        except NvmlError as exc:
            self._problem(f"NVML events are not available ({exc}); XIDs are not recorded")
            return False
        for gpu, handle, _uuid in self._devices:
            try:
                mask = self._mask & self._nvml.supported_event_types(handle)
                if mask:
                    self._nvml.register_events(handle, mask, self._event_set)
                    self.registered.append(gpu)
            except NvmlError as exc:
                self._problem(f"GPU {gpu}: cannot register for NVML events ({exc}); its XIDs are not recorded")
        if not self.registered:
            self._free()
            return False
        self._thread = threading.Thread(target=self._run, name="infersight-nvml-events", daemon=True)
        self._thread.start()
        return True

    def drain(self) -> list[Event]:
        """Events received since the last call, oldest first."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def take_problems(self) -> list[str]:
        with self._lock:
            out, self._problems = self._problems, []
        return out

    def stop(self) -> None:
        """Stop the thread (within about ``wait_ms``) and free the event set. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._wait_ms / 1000 * 4 + 1.0)
            if self._thread.is_alive():
                # still inside NVML: freeing the set under it would be unsafe; leak it instead
                log.warning("the NVML event thread did not stop; leaving its event set allocated")
                return
        self._free()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._nvml.event_wait(self._event_set, self._wait_ms)
            except NvmlTimeout:
                continue
            except NvmlError as exc:
                self._problem(f"waiting for NVML events failed ({exc}); retrying")
                self._stop.wait(1.0)  # a lost GPU makes every wait fail at once: do not spin
                continue
            event = event_from(data, self._gpu_of.get(data.uuid), self._host, self._clock())
            if event.severity != "info":
                log.warning("%s", event.summary)
            with self._lock:
                if len(self._pending) == self._pending.maxlen:
                    self.dropped += 1
                self._pending.append(event)

    def _problem(self, message: str) -> None:
        with self._lock:
            if message in self._said:
                return
            self._said.add(message)
            self._problems.append(message)
        log.warning("%s", message)

    def _free(self) -> None:
        if self._event_set is not None:
            try:
                self._nvml.event_set_free(self._event_set)
            except NvmlError:
                pass
            self._event_set = None
