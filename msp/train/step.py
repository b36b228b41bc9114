"""The jitted meta-training step: meta-gradient over a sharded meta-batch, outer updates, outer prox, metrics."""
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from msp.meta import MetaBatch, MetaObjective, lambdas_from_rho, sum_over_episodes
from msp.parallel import DATA_AXIS
from msp.sparsity import block_soft_threshold, sparsity_stats
from msp.train.state import MetaTrainState


def make_meta_train_step(objective: MetaObjective, mesh: Mesh, outer_lr: Callable[[jax.Array], jax.Array], *,
                         learn_lambda: bool = True, episode_loop: str = "unroll",
                         ) -> Callable[[MetaTrainState, MetaBatch], tuple[MetaTrainState, dict]]:
  """Returns jitted `meta_train_step(state, meta_batch) -> (state, metrics)`.

  meta_batch: leading axis E (episodes), sharded over the mesh axis `data`; state replicated. Each device runs
  its E/D episodes and the sums are all-reduced, so the result equals a one-device run up to summation order.
  outer_lr: the outer optimiser's schedule step → β; the outer prox uses threshold β·λ after the update.
  The input state's buffers are donated (reused for the output): do not use them after the call.
  Metrics: loss, task_loss (T,) (mean over the episodes containing the task), lambda (L,), and sparsity stats.
  """
  spec = objective.spec

  def local_sums(params, rho, batch_stats, meta_batch):
    # Replicated inputs must become device-varying before the inner jax.grad, or shard_map sums the inner
    # gradients across devices (silently wrong).
    params, rho = jax.lax.pcast((params, rho), DATA_AXIS, to="varying")
    sums = sum_over_episodes(objective, params, rho, batch_stats, meta_batch, episode_loop)
    return jax.lax.psum(sums, DATA_AXIS)

  sharded_sums = jax.shard_map(local_sums, mesh=mesh, in_specs=(P(), P(), P(), P(DATA_AXIS)), out_specs=P())

  def meta_train_step(state: MetaTrainState, meta_batch: MetaBatch):
    num_episodes = meta_batch.num_episodes
    sums = sharded_sums(state.params, state.rho, state.batch_stats, meta_batch)
    mean = lambda tree: jax.tree.map(lambda x: x / num_episodes, tree)
    grads, grad_rho, batch_stats = mean(sums["grad_params"]), mean(sums["grad_rho"]), mean(sums["batch_stats"])

    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rho, rho_opt_state = state.rho, state.rho_opt_state
    if learn_lambda and objective.sparse:
      rho_updates, rho_opt_state = state.rho_tx.update(grad_rho, state.rho_opt_state, state.rho)
      rho = optax.apply_updates(state.rho, rho_updates)
    lambdas = lambdas_from_rho(rho, spec.num_layers)
    if objective.sparse:
      params = block_soft_threshold(params, spec, outer_lr(state.step) * lambdas)

    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, rho=rho,
                              opt_state=opt_state, rho_opt_state=rho_opt_state)
    metrics = {
        "loss": sums["loss"] / num_episodes,
        "task_loss": sums["task_loss"] / jnp.maximum(sums["task_count"], 1.0),
        "lambda": lambdas,
        "grad_norm": optax.global_norm(grads),
        **sparsity_stats(params, spec),
    }
    return new_state, metrics

  return jax.jit(meta_train_step, donate_argnums=0)
