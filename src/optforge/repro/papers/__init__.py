"""One module per paper; each registers one reproduction. Discovered automatically."""
