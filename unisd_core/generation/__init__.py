"""unisd_core/generation package."""
