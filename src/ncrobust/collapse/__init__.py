"""ncrobust.collapse."""
