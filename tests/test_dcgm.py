"""dcgm-exporter as the second source: exposition parsing, mapping to GPU ids, the scraper
against a real HTTP endpoint, and the collector using it only for GPUs without GPM."""
from __future__ import annotations

import http.server
import logging
import threading
from pathlib import Path

import pytest

from infersight.daemon.collectors.gpu import GpuCollector
from infersight.daemon.config.load import GpuCollectorConfig
from infersight.daemon.gpu.dcgm import DcgmScraper, parse_exposition, to_samples
from infersight.daemon.gpu.fake_nvml import FakeGpu, FakeMig, FakeNvml, gpm_values

EXPOSITION = (Path(__file__).parent / "fixtures" / "dcgm-exporter" / "a100-mig.prom").read_text()
UUID0 = "GPU-5fd4f8a3-1b64-a2d1-73a0-2b3e9c6f1d21"
UUID1 = "GPU-9c0e7d52-44a8-0f3b-b1e6-7d2a5e8c3f90"
log = logging.getLogger("test_dcgm")


def test_fixture_gives_one_reading_per_gpu_and_mig_instance_in_signal_units():
    readings = {(r.uuid, r.gpu_label, r.gpu_instance): r for r in parse_exposition(EXPOSITION)}
    assert set(readings) == {(UUID0, 0, None), (UUID1, 1, 1), (UUID1, 1, 5)}
    whole = readings[(UUID0, 0, None)]
    assert whole.model == "NVIDIA A100-SXM4-80GB"
    assert whole.values == pytest.approx({
        "sm_util": 96.2, "sm_occupancy": 41.2, "tensor_util": 91.3, "dram_bw_util": 24.4, "graphics_util": 99.1,
        "pcie_tx_bytes_s": 3145728.0, "pcie_rx_bytes_s": 5242880.0,
        "nvlink_tx_bytes_s": 125829120.0, "nvlink_rx_bytes_s": 130023424.0})
    gi1 = readings[(UUID1, 1, 1)]
    assert (gi1.values["sm_util"], gi1.values["dram_bw_util"], gi1.values["tensor_util"]) == pytest.approx(
        (61.5, 78.1, 5.2))
    assert readings[(UUID1, 1, 5)].values["sm_util"] == 0.0


def test_odd_lines_cost_only_themselves():
    text = "\n".join([
        '# TYPE DCGM_FI_PROF_SM_ACTIVE gauge',
        'DCGM_FI_PROF_SM_ACTIVE{gpu="0",uuid="GPU-old",modelName="Tesla \\"V100\\""} 0.25 1700000000000',  # 1.x labels
        'DCGM_FI_PROF_SM_ACTIVE{gpu="1",UUID="GPU-b"} NaN',
        'DCGM_FI_PROF_SM_ACTIVE{gpu="2",UUID="GPU-c" 0.5',           # broken: no closing brace
        'DCGM_FI_PROF_DRAM_ACTIVE 0.9',                              # no labels: which GPU?
        'DCGM_FI_DEV_NAME{gpu="0",UUID="GPU-old"} Tesla V100',        # not a number, not ours
        'DCGM_FI_PROF_DRAM_ACTIVE{gpu="0",uuid="GPU-old"} 0.5',
        'DCGM_FI_PROF_PIPE_FP64_ACTIVE{gpu="0",uuid="GPU-old"} 0.7',  # a field we do not map
    ])
    (r,) = parse_exposition(text)
    assert (r.uuid, r.gpu_label, r.gpu_instance, r.model) == ("GPU-old", 0, None, 'Tesla "V100"')
    assert r.values == {"sm_util": 25.0, "dram_bw_util": 50.0}


def test_to_samples_keeps_what_the_mapping_names():
    readings = parse_exposition(EXPOSITION)
    ids = {(UUID0, None): 0, (UUID1, 1): 101}
    samples = to_samples(readings, 12.5, lambda r: ids.get((r.uuid, r.gpu_instance)))
    assert sorted((s.gpu, s.source, s.t) for s in samples) == [(0, "dcgm", 12.5), (101, "dcgm", 12.5)]


class Exporter:
    """A real HTTP endpoint serving ``text`` at /metrics (what dcgm-exporter does on :9400)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                outer.hits += 1
                body = outer.text.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def exporter():
    e = Exporter(EXPOSITION)
    yield e
    e.close()


async def test_scraper_reads_a_real_endpoint_on_its_interval(exporter):
    s = DcgmScraper(exporter.url, 1.0, log)
    assert len(await s.poll(10.0)) == 3 and s.state == "ok"
    assert await s.poll(10.5) is None and exporter.hits == 1     # not due yet
    assert await s.poll(11.0) is not None and exporter.hits == 2
    assert s.take_errors() == []


async def test_scraper_says_once_when_the_exporter_has_no_profiling_fields(exporter):
    exporter.text = "\n".join(line for line in EXPOSITION.splitlines() if "DCGM_FI_PROF_" not in line)
    s = DcgmScraper(exporter.url, 1.0, log)
    assert await s.poll(0.0) is None
    assert await s.poll(100.0) is None
    (error,) = s.take_errors()
    assert "no DCGM_FI_PROF_* fields" in error and s.state == "no_prof"


async def test_configured_endpoint_down_is_an_error_once_with_backoff(exporter):
    url = exporter.url
    exporter.close()
    s = DcgmScraper(url, 1.0, log)
    assert await s.poll(0.0) is None
    assert await s.poll(1.0) is None and await s.poll(4.9) is None    # backing off 5 s
    assert await s.poll(5.0) is None
    (error,) = s.take_errors()
    assert url in error and s.state == "unreachable"


async def test_probed_default_endpoint_absent_is_not_an_error():
    def refuse(url, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    s = DcgmScraper("", 1.0, log, fetch=refuse)
    assert s.url == "http://127.0.0.1:9400/metrics" and not s.configured
    assert await s.poll(0.0) is None
    assert s.take_errors() == [] and s.state == "unreachable"


async def test_collector_takes_dcgm_figures_only_for_gpus_without_gpm(exporter):
    a100 = FakeGpu(uuid=UUID0, name="NVIDIA A100-SXM4-80GB", gpm_supported=False, util=(100.0, 31.0))
    a100_mig = FakeGpu(uuid=UUID1, name="NVIDIA A100-SXM4-80GB", gpm_supported=False, mig_mode=True, util=None,
                       instances=[FakeMig(1, "MIG-1"), FakeMig(5, "MIG-5")])
    h100 = FakeGpu(uuid="GPU-h100", gpm=gpm_values(sm=50.0))
    clock = [0.0]
    c = GpuCollector(GpuCollectorConfig(dcgm_url=exporter.url, events=False), "h",
                     nvml=FakeNvml([a100, a100_mig, h100]), clock=lambda: clock[0])
    batches = []
    for _ in range(3):
        batches.append(await c.collect(1000.0 + clock[0]))
        clock[0] += 0.5
    dcgm = [s for b in batches for s in b.gpu_samples if s.source == "dcgm"]
    assert {s.gpu for s in dcgm} == {0, 201, 205}      # GPU 1's instances 1 and 5
    first = {s.gpu: s.values for s in batches[0].gpu_samples if s.source == "dcgm"}
    assert first[0]["tensor_util"] == pytest.approx(91.3) and first[201]["dram_bw_util"] == pytest.approx(78.1)
    assert exporter.hits == 2                                  # every 1 s, not every 0.5 s tick
    nvml_rows = [s for s in batches[-1].gpu_samples if s.gpu == 0 and s.source == "nvml"]
    assert nvml_rows and nvml_rows[0].values["util_gpu"] == 100.0 and "sm_util" not in nvml_rows[0].values
    assert any(s.gpu == 2 and s.source == "gpm" for s in batches[-1].gpu_samples)
    sources = {g["gpu"]: g["source"] for g in c.status()["gpus"]}
    assert sources == {0: "dcgm", 1: "nvml", 201: "dcgm", 205: "dcgm", 2: "gpm"}
    await c.close()


async def test_collector_does_not_scrape_when_every_gpu_has_gpm(exporter):
    c = GpuCollector(GpuCollectorConfig(dcgm_url=exporter.url, events=False), "h",
                     nvml=FakeNvml([FakeGpu(uuid="GPU-h100")]), clock=lambda: 0.0)
    await c.collect(1.0)
    assert exporter.hits == 0
    await c.close()
