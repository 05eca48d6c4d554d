"""Alias kept so that SLURM jobs queued by an earlier ncrobust (pickled ``RunJob``) still load."""

from ncrobust.experiments.jobs import RunJob

__all__ = ["RunJob"]
