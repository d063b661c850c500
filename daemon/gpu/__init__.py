"""GPU counters: the NVML seam and its fake, GPM, device reading, XID events, the dcgm-exporter source."""
