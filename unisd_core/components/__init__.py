"""unisd_core/components package."""
