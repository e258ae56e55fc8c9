"""Naming maps: one TOML data file per architecture (loaded by llmstd.maps). No code lives here."""
