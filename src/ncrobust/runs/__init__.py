"""Run directories: the directory and its lock, its tables and its checkpoints.

Import from the submodules (:mod:`~ncrobust.runs.directory`, :mod:`~ncrobust.runs.lock`,
:mod:`~ncrobust.runs.tables`, :mod:`~ncrobust.runs.checkpoint`); this package itself imports
nothing, so reading a table schema does not load the configuration.
"""
