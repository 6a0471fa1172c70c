"""The measurements behind `aloe bench` (aloe.bench holds its arguments and the command).

- measure: timing, FLOP counting, the matmul peak, thread counts
- learner: critic and actor steps at a preset's sizes, the actor step's parts, inference
- loop: raw stepping against collection and evaluation (inference apart), one iteration
- against: another git revision's figures, measured by its own bench in the same run
- table: the figures as text, side by side with ratios
"""
