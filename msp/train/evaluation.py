"""Evaluation after adaptation: the meta-learned initialisation is meant to be adapted before it is used.

MAML-style initialisations can be poor predictors on their own (the outer loss only ever sees them after K inner
steps), so seen tasks are evaluated the way the meta-objective trains them: K inner steps on a support batch with
every task present, then a forward pass in inference mode (BatchNorm on running averages).
"""
import jax.numpy as jnp

from msp.meta import MetaBatch
from msp.train.setup import MetaLearner
from msp.train.state import MetaTrainState


def adapted_outputs(learner: MetaLearner, state: MetaTrainState, support: dict, images) -> dict:
  """support: "image" (B, H, W, 3) + every seen task's target; images (N, H, W, 3) → {task: raw output (N, ...)}."""
  episode = MetaBatch(support=support, query=support, task_mask=jnp.ones(len(learner.tasks)))
  rho = state.rho + state.budget.lambda_scale
  fast, batch_stats = learner.objective.adapt(state.params, rho, state.batch_stats, episode)
  return learner.model.apply({"params": fast, "batch_stats": batch_stats}, images, train=False)
