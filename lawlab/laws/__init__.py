"""Compression laws: forms, fitting, comparing forms, and the critical-ratio decisions."""
