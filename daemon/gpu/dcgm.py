"""dcgm-exporter as a second source of SM, tensor and DRAM activity (GPUs without GPM).

GPUs before Hopper (A100, L40S, ...), older drivers and MIG on A100 have no NVML GPM; DCGM's
profiling fields give the same figures. dcgm-exporter publishes them as Prometheus gauges,
one series per GPU (or MIG GPU instance) labelled as its template writes them::

    DCGM_FI_PROF_SM_ACTIVE{gpu="0",UUID="GPU-...",pci_bus_id="...",device="nvidia0",
        modelName="NVIDIA A100-SXM4-80GB",GPU_I_PROFILE="1g.10gb",GPU_I_ID="1",Hostname="..."} 0.42

Ratios (0-1) become percentages; the PCIe/NVLink fields are already bytes per second.
``UUID`` is the physical GPU's UUID, also on MIG series (the 1.x compatibility mode spells
it ``uuid``); ``GPU_I_ID`` is present only on MIG series.

:func:`parse_exposition` and :func:`to_samples` are pure. :class:`DcgmScraper` fetches an
endpoint on a schedule (blocking HTTP in a thread) and says when there is none.
"""
from __future__ import annotations

import asyncio
import logging
import math
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterable

from infersight.daemon.engines import promtext
from infersight.storage.model import GpuSample

DEFAULT_URL = "http://127.0.0.1:9400/metrics"
MAX_BYTES = 16 * 2 ** 20

# DCGM field -> (signal, factor to the signal's unit)
PROF_FIELDS: dict[str, tuple[str, float]] = {
    "DCGM_FI_PROF_SM_ACTIVE": ("sm_util", 100.0),
    "DCGM_FI_PROF_SM_OCCUPANCY": ("sm_occupancy", 100.0),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("tensor_util", 100.0),
    "DCGM_FI_PROF_DRAM_ACTIVE": ("dram_bw_util", 100.0),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("graphics_util", 100.0),
    "DCGM_FI_PROF_PCIE_TX_BYTES": ("pcie_tx_bytes_s", 1.0),
    "DCGM_FI_PROF_PCIE_RX_BYTES": ("pcie_rx_bytes_s", 1.0),
    "DCGM_FI_PROF_NVLINK_TX_BYTES": ("nvlink_tx_bytes_s", 1.0),
    "DCGM_FI_PROF_NVLINK_RX_BYTES": ("nvlink_rx_bytes_s", 1.0),
}

_PREFIX = "DCGM_FI_PROF_"


@dataclass(slots=True)
class DcgmReading:
    """The profiling figures of one GPU or MIG GPU instance, in GPU_SIGNALS units."""

    uuid: str                   # physical GPU's UUID ("" when the exporter gave none)
    gpu_label: int | None       # the exporter's ``gpu`` label (its NVML index)
    gpu_instance: int | None    # GPU_I_ID on MIG series, else None
    model: str
    values: dict[str, float]


def parse_exposition(text: str) -> list[DcgmReading]:
    """The DCGM profiling series of an exposition, one reading per GPU / GPU instance.

    Only lines of :data:`PROF_FIELDS` are handed to the tolerant parser (a dcgm-exporter
    page is mostly other fields); NaN values and series without a GPU label are left out.
    """
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(_PREFIX))
    readings: dict[tuple[str, int | None, int | None], DcgmReading] = {}
    for sample in promtext.parse(wanted).samples:
        field = PROF_FIELDS.get(sample.name)
        if field is None or math.isnan(sample.value):
            continue
        labels = dict(sample.labels)
        uuid = labels.get("UUID", labels.get("uuid", ""))
        key = (uuid, _int(labels.get("gpu")), _int(labels.get("GPU_I_ID")))
        if key == ("", None, None):
            continue  # nothing says which GPU this is
        r = readings.get(key)
        if r is None:
            r = readings[key] = DcgmReading(uuid, key[1], key[2], labels.get("modelName", ""), {})
        signal, factor = field
        r.values[signal] = sample.value * factor
    return list(readings.values())


def to_samples(readings: Iterable[DcgmReading], t: float,
               gpu_for: Callable[[DcgmReading], int | None]) -> list[GpuSample]:
    """GpuSamples with source "dcgm" for the readings ``gpu_for`` maps to a GPU id."""
    out = []
    for r in readings:
        gpu = gpu_for(r)
        if gpu is not None and r.values:
            out.append(GpuSample(t=t, gpu=gpu, values=dict(r.values), source="dcgm"))
    return out


def fetch_text(url: str, timeout_s: float) -> str:
    """GET ``url`` (blocking). Raises OSError (URLError, HTTPError, timeouts) or ValueError."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - an operator-given URL
        body = resp.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise ValueError(f"more than {MAX_BYTES} bytes")
    return body.decode("utf-8", "replace")


class DcgmScraper:
    """Scrapes one dcgm-exporter endpoint every ``interval_s`` while the collector needs it.

    ``url`` empty means probe :data:`DEFAULT_URL` (absence there is normal and only logged
    once); a configured URL that fails is reported as an error, once per distinct failure.
    Failures back off to one try a minute.
    """

    def __init__(self, url: str, interval_s: float, log: logging.Logger,
                 fetch: Callable[[str, float], str] = fetch_text) -> None:
        self.url = url or DEFAULT_URL
        self.configured = bool(url)
        self.interval_s = interval_s
        self.timeout_s = min(2.0, max(0.2, 0.8 * interval_s))
        self._log = log
        self._fetch = fetch
        self._next = 0.0
        self._backoff = 0.0
        self._said: set[str] = set()
        self._errors: list[str] = []
        self.state = "not tried"
        self.last_error = ""

    async def poll(self, now_mono: float) -> list[DcgmReading] | None:
        """Readings when a scrape was due and worked; None otherwise."""
        if now_mono < self._next:
            return None
        self._next = now_mono + self.interval_s
        try:
            text = await asyncio.to_thread(self._fetch, self.url, self.timeout_s)
        except (OSError, ValueError) as exc:
            self._fail(now_mono, "unreachable", f"no dcgm-exporter answer at {self.url}: {exc}")
            return None
        readings = parse_exposition(text)
        if not readings:
            self._fail(now_mono, "no_prof", f"the dcgm-exporter at {self.url} exports no DCGM_FI_PROF_* fields "
                                            "(its default counters omit them: run it with a counters file that "
                                            "lists them, e.g. dcp-metrics-included.csv)")
            return None
        if self.state != "ok":
            self._log.info("reading SM, tensor and DRAM activity from dcgm-exporter at %s", self.url)
        self.state, self.last_error, self._backoff = "ok", "", 0.0
        self._said.clear()  # a later outage is worth saying again
        return readings

    def take_errors(self) -> list[str]:
        errors, self._errors = self._errors, []
        return errors

    def status(self) -> dict:
        return {"url": self.url, "configured": self.configured, "state": self.state, "last_error": self.last_error}

    def _fail(self, now_mono: float, state: str, message: str) -> None:
        self.state, self.last_error = state, message
        self._backoff = min(60.0, max(5.0, self._backoff * 2))
        self._next = now_mono + self._backoff
        if state in self._said:
            return
        self._said.add(state)
        if self.configured or state == "no_prof":
            self._log.warning("%s", message)
            self._errors.append(message)
        else:
            self._log.info("%s; SM/tensor/DRAM activity of GPUs without GPM stays unknown", message)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
