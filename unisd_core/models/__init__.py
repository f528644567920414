"""unisd_core/models package."""
