"""ncrobust.data."""
