"""The multi-task loss of one batch: Σ_t mask_t · w_t · L_t(model(θ, φ; images), targets_t)."""
import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from msp.tasks import Task

Params = Any


@dataclasses.dataclass(frozen=True)
class MultiTaskLoss:
  """Static description of the loss; calling it is a pure function of arrays.

  apply_fn: the model's `apply`; tasks: the seen tasks, in task-mask order; task_weights: (T,) w_t or None (all 1).
  """
  apply_fn: Callable[..., Any]
  tasks: Sequence[Task]
  task_weights: tuple[float, ...] | None = None

  def __call__(self, params: Params, batch_stats: Params, batch: dict[str, jax.Array], task_mask: jax.Array,
               ) -> tuple[jax.Array, tuple[jax.Array, Params]]:
    """Forward in train mode (BatchNorm on batch statistics).

    batch: "image" (B, H, W, 3) and one target per task; task_mask: (T,).
    Returns (scalar masked weighted loss, ((T,) per-task losses, batch_stats with running averages updated)).
    """
    outputs, updates = self.apply_fn({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                     mutable=["batch_stats"])
    per_task = jnp.stack([task.loss(outputs[task.name], batch[task.name]) for task in self.tasks])
    weights = jnp.ones_like(per_task) if self.task_weights is None else jnp.asarray(self.task_weights, per_task.dtype)
    return jnp.sum(task_mask * weights * per_task), (per_task, updates["batch_stats"])
