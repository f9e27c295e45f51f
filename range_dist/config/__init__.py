"""Configuration: one dataclass declaration becomes flags and a YAML loader; the shared value parsers."""
