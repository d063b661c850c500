"""Fleet exporters: hourly Parquet files and Grafana Pyroscope pushes."""
