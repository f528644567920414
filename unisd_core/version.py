"""Semantic version of the library; it enters every run key, so bump it when results change."""

LIBRARY_VERSION = "0.2.0"

# History (each bump re-keys every run: earlier runs are not reused, and `unisd report` leaves
# them out unless --include-versions):
# 0.2.0  fp32 master weights under bf16 full fine-tuning; the loss normaliser counts the whole
#        accumulated batch; the synthetic task's base and settings changed (issue 14).
