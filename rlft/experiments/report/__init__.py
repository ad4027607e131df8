"""The report half of `rlft reproduce`: records to results.json, report.md and plots (no JAX)."""
