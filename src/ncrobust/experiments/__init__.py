"""Many runs: grids, sweeps, their executors (sequential, local, SLURM) and jobs, and the demo."""
