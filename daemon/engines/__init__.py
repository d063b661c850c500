"""Engine metrics: the exposition parser, per-engine specs, normalized signals, histograms, ingest and endpoint discovery."""
