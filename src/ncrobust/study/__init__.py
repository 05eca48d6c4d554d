"""Studying finished runs: load and aggregate over seeds, the paper's findings, figures, report."""
