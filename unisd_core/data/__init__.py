"""unisd_core/data package."""
