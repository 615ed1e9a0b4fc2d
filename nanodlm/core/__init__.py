"""Plumbing that imports nothing else of nanodlm: one-line errors, atomic file writes, JSON reports, plots."""
