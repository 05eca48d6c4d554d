"""ncrobust.training."""
