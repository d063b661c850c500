"""Python stacks of the serving processes: discovery and targets, the py-spy runner and parsers, the rate budget, failure classes, per-second buckets, per-thread CPU."""
