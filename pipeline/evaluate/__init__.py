"""Scoring of every model variant, plots and ABAW submission files."""
