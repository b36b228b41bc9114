"""Config sections the experiments share: the method's defaults (sparsity, safeguards, budget, meta, optimiser).

Each experiment config starts from `method_defaults()` and overrides what its data needs.
"""
import ml_collections

from msp.sparsity import DEFAULT_INCLUDE


def method_defaults() -> ml_collections.ConfigDict:
  """The `sparsity`, `safeguards`, `budget`, `meta` and `optim` sections with msp's defaults (PAPER.md §2–§3)."""
  c = ml_collections.ConfigDict()
  c.sparsity = ml_collections.ConfigDict(dict(
      enabled=True, include=DEFAULT_INCLUDE, grouping="out_channel", weighting="sqrt_group_size",
      lambda_mode="per_layer", lambda_init=1e-2, learn_lambda=True))
  c.safeguards = ml_collections.ConfigDict(dict(
      lambda_min=1e-8, lambda_max=10.0, min_channels=1, outlier_factor=10.0, outlier_warmup=10,
      runaway_factor=100.0, runaway_window=100))
  c.budget = ml_collections.ConfigDict(dict(
      enabled=False, target_kind="channels_removed", target=0.5, cost="flops", dual_lr=0.005, constraint="at_most",
      scale_lr=0.02, horizon=150.0, cap=True))
  c.meta = ml_collections.ConfigDict(dict(
      mode="first_order", inner_steps=1, inner_lr=0.05, remat=False, inner_batch_stats=False, episodes=4,
      support_size=8, query_size=8, task_sampling="subsets", episode_loop="unroll"))
  # SGD makes the outer prox a true proximal-gradient step: a group stays at zero iff its gradient norm is below
  # λ·w. With Adam, whose steps are ~lr per coordinate whatever the gradient, channels kept dying at fixed λ and
  # budget mode overshot its target (see README, "Budget mode").
  c.optim = ml_collections.ConfigDict(dict(name="sgd", lr=0.02, weight_decay=0.0, rho_lr=0.01))
  return c
