"""unisd_core/training package."""
