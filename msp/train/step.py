"""The jitted meta-training step: meta-gradient over a sharded meta-batch, outer updates, outer prox, metrics."""
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from msp.meta import MetaBatch, MetaObjective, lambdas_from_rho, sum_over_episodes
from msp.parallel import DATA_AXIS
from msp.sparsity import CostModel, block_soft_threshold, floor_engaged, sparsity_stats
from msp.train.safeguards import Safeguards, finite_parts
from msp.train.state import MetaTrainState

GRAD_NORM_DECAY = 0.9  # running average of accepted meta-gradient norms, for outlier detection


def make_meta_train_step(objective: MetaObjective, mesh: Mesh, outer_lr: Callable[[jax.Array], jax.Array], *,
                         safeguards: Safeguards = Safeguards(), learn_lambda: bool = True,
                         episode_loop: str = "unroll", cost_model: CostModel | None = None,
                         freeze_pattern: bool = False) -> Callable[[MetaTrainState, MetaBatch], tuple]:
  """Returns jitted `meta_train_step(state, meta_batch) -> (state, metrics)`.

  meta_batch: leading axis E (episodes), sharded over the mesh axis `data`; state replicated. Each device runs
  its E/D episodes and the sums are all-reduced, so the result equals a one-device run up to summation order.
  The input state's buffers are donated (reused for the output): do not use them after the call.
  Order: meta-gradient → skip if non-finite or an outlier (the state then only counts the step) → θ, φ by the
  outer optimiser (with `freeze_pattern`, the groups that were zero are zeroed again: a pruned structure is
  trained as it is) → ρ by its optimiser, clipped so that λ = exp(ρ + σ) is within the bounds → outer prox at threshold
  outer_lr(step)·λ with the channel floor (and the budget's cap) → μ and σ by the budget's controllers (budget mode)
  → ρ clipped again against the new σ.
  Metrics: loss (objective), task_loss (T,) (mean over the episodes containing the task), lambda (L,), mu,
  grad_norm, skipped, lambda_at_bound (L,), floor_engaged (L,), finite (4,) (`safeguards.finite_parts` of the new
  state), `sparsity_stats`, and flops_kept when a
  `cost_model` is given.
  """
  spec, budget = objective.spec, objective.budget

  def local_sums(params, rho, mu, batch_stats, meta_batch):
    # Replicated inputs must become device-varying before the inner jax.grad, or shard_map sums the inner
    # gradients across devices (silently wrong).
    params, rho = jax.lax.pcast((params, rho), DATA_AXIS, to="varying")
    sums = sum_over_episodes(objective, params, rho, batch_stats, meta_batch, episode_loop, mu)
    return jax.lax.psum(sums, DATA_AXIS)

  sharded_sums = jax.shard_map(local_sums, mesh=mesh, in_specs=(P(), P(), P(), P(), P(DATA_AXIS)), out_specs=P())

  def meta_train_step(state: MetaTrainState, meta_batch: MetaBatch):
    num_episodes = meta_batch.num_episodes
    sums = sharded_sums(state.params, state.log_lambdas, state.budget.mu,
                        state.batch_stats, meta_batch)
    mean = lambda tree: jax.tree.map(lambda x: x / num_episodes, tree)
    grads, grad_rho, batch_stats = mean(sums["grad_params"]), mean(sums["grad_rho"]), mean(sums["batch_stats"])
    grad_norm = optax.tree.norm((grads, grad_rho))
    skip = safeguards.skip_step(grad_norm, state.grad_norm_avg, state.accepted_steps)

    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if freeze_pattern:
      params = spec.scale_groups(params, spec.alive(state.params))
    rho, rho_opt_state = state.rho, state.rho_opt_state
    if budget is not None:
      # The budget sets the level of λ through σ; the meta-gradient only moves λ between layers.
      grad_rho = grad_rho - jnp.mean(grad_rho)
    if learn_lambda and objective.sparse:
      rho_updates, rho_opt_state = state.rho_tx.update(grad_rho, state.rho_opt_state, state.rho)
      rho = optax.apply_updates(state.rho, rho_updates)
    rho, _ = safeguards.clip_rho(rho, state.budget.lambda_scale)
    lambdas = lambdas_from_rho(rho + state.budget.lambda_scale, spec.num_layers)
    thresholds = outer_lr(state.step) * lambdas
    engaged = jnp.zeros(spec.num_layers, jnp.int32)
    if objective.sparse:
      engaged = floor_engaged(params, spec, thresholds, objective.min_alive)
      params = block_soft_threshold(params, spec, thresholds, objective.min_alive,
                                    cap=None if budget is None else budget.prox_cap)
    budget_state = state.budget if budget is None else budget.update(state.budget, params)
    # σ has just moved: clip again so that the λ of the next step (and of the logs) is within the bounds too.
    rho, at_bound = safeguards.clip_rho(rho, budget_state.lambda_scale)
    first = state.accepted_steps == 0
    grad_norm_avg = jnp.where(first, grad_norm, GRAD_NORM_DECAY * state.grad_norm_avg +
                              (1 - GRAD_NORM_DECAY) * grad_norm)

    updated = state.replace(params=params, batch_stats=batch_stats, rho=rho, budget=budget_state, grad_norm_avg=grad_norm_avg,
                            accepted_steps=state.accepted_steps + 1, opt_state=opt_state,
                            rho_opt_state=rho_opt_state)
    new_state = jax.tree.map(lambda new, old: jnp.where(skip, old, new), updated, state)
    new_state = new_state.replace(step=state.step + 1)
    metrics = {
        "loss": sums["loss"] / num_episodes,
        "task_loss": sums["task_loss"] / jnp.maximum(sums["task_count"], 1.0),
        "lambda": lambdas_from_rho(new_state.log_lambdas, spec.num_layers),
        "mu": new_state.budget.mu,
        "lambda_scale": new_state.budget.lambda_scale,
        "grad_norm": grad_norm,
        "skipped": skip,
        "lambda_at_bound": at_bound,
        "floor_engaged": engaged,
        "finite": finite_parts(new_state),
        **sparsity_stats(new_state.params, spec),
    }
    if cost_model is not None:
      metrics["flops_kept"] = cost_model.flops_kept(new_state.params)
    return new_state, metrics

  return jax.jit(meta_train_step, donate_argnums=0)
