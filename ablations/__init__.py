"""ablations package."""
