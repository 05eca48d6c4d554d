"""ncrobust.bench."""
