"""`infersight demo`: the command, its simulated engine, backends, metrics, timeline and simulated GPU collector."""
