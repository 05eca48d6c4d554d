"""ncrobust.analysis."""
