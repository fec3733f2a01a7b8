"""Gene panels, synthetic phantom tissue, readers of real formats and patch datasets."""
