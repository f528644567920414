"""unisd_core/losses package."""
