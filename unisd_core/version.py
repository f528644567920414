"""Semantic version of the library; it enters every run key, so bump it when results change."""

LIBRARY_VERSION = "0.1.0"
