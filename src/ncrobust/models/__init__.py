"""ncrobust.models."""
