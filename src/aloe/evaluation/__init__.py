"""Evaluation of a trained run (issue 5): the paper's metrics and the critic's accuracy.

metrics   success rate, steps to success, throughput (Appendix E)
rollout   operator-free rollouts with per-step hooks, one env or a batch of restored ones
variants  unseen objects: size, mass, friction, colour, initial positions (Fig. 5, middle)
perturb   action-noise bursts and pushes on the object during a rollout (Fig. 5, right)
qtrace    Q_pess along an episode with fragments, takeovers and outcomes (Figs. 3 and 9)
ope       ground-truth Q^π and V^π from restored simulator states, and the critic's error
action_ope  the critic's ranking of chunks at one state against ground truth, and the weights
action_scores  the action-level OPE's scores, pure functions of the truth and the critic
indicator  a run's labels (RECAP's improvement indicator) against the truth's
suite     `aloe eval --suite full`: all of the above into eval.json and report.html
report    the run's self-contained HTML report
"""
