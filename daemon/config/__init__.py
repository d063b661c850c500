"""Configuration: one frozen dataclass tree loaded from TOML (load), its field checks (fields) and the generated example (example)."""
