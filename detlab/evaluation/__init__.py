"""Evaluators: accumulate predictions over a split and compute metrics (DDP-safe)."""
