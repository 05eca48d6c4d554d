"""ncrobust.attacks."""
