"""Evaluation: ``nanodlm eval`` (loss / NELBO), ``nanodlm judge``, the protocol's arithmetic, text statistics."""
