"""Beyond one process: Ray actors for collection and evaluation (`workers`), Ray tasks for
`aloe compare` (`ray_runs`), and the learner on several torchrun/DDP processes (`ddp`).

Nothing here is imported by a run without `--workers`, `--ray-address` or a torchrun
launch; Ray itself is imported only inside `workers.connect` and `ray_runs`.
"""
