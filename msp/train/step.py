"""The jitted meta-training step: meta-gradient over a sharded meta-batch, outer updates, outer prox, metrics."""
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from msp.meta import MetaBatch, MetaObjective, lambdas_from_log, sum_over_episodes
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
  Order (each a named sub-step): `meta_gradient` → skip if non-finite or an outlier (the state then only counts the
  step) → `update_weights` (θ, φ; with `freeze_pattern` a pruned structure is trained as it is) → `update_rho` (ρ,
  clipped so that λ = exp(ρ + σ) is within the bounds) → `outer_prox` at outer_lr(step)·λ with the channel floor
  (and the budget's cap) → μ and σ by the budget's controllers (budget mode) → ρ clipped again against the new σ.
  Names: ρ (`rho`) is the meta-parameter, σ (`state.budget.lambda_scale`) budget mode's shared log-scale, and
  log λ = ρ + σ (`log_lambdas`) what the objective and the prox use.
  Metrics: loss (objective), task_loss (T,) (mean over the episodes containing the task), lambda (L,), mu,
  grad_norm, skipped, lambda_at_bound (L,), floor_engaged (L,), finite (4,) (`safeguards.finite_parts` of the new
  state), `sparsity_stats`, and flops_kept when a
  `cost_model` is given.
  """
  spec, budget = objective.spec, objective.budget

  def local_sums(params, log_lambdas, mu, batch_stats, meta_batch):
    # Replicated inputs must become device-varying before the inner jax.grad, or shard_map sums the inner
    # gradients across devices (silently wrong).
    params, log_lambdas = jax.lax.pcast((params, log_lambdas), DATA_AXIS, to="varying")
    sums = sum_over_episodes(objective, params, log_lambdas, batch_stats, meta_batch, episode_loop, mu)
    return jax.lax.psum(sums, DATA_AXIS)

  sharded_sums = jax.shard_map(local_sums, mesh=mesh, in_specs=(P(), P(), P(), P(), P(DATA_AXIS)), out_specs=P())

  def meta_gradient(state: MetaTrainState, meta_batch: MetaBatch) -> dict:
    """The objective's value and gradients (and BatchNorm statistics), averaged over the meta-batch's episodes."""
    sums = sharded_sums(state.params, state.log_lambdas, state.budget.mu, state.batch_stats, meta_batch)
    mean = {key: jax.tree.map(lambda x: x / meta_batch.num_episodes, sums[key])
            for key in ("loss", "grad_params", "grad_log_lambdas", "batch_stats")}
    return {**mean, "task_loss": sums["task_loss"] / jnp.maximum(sums["task_count"], 1.0)}

  def update_weights(state: MetaTrainState, grads) -> tuple:
    """θ, φ by the outer optimiser; with `freeze_pattern` the groups that were zero stay zero."""
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if freeze_pattern:
      params = spec.scale_groups(params, spec.alive(state.params))
    return params, opt_state

  def update_rho(state: MetaTrainState, grad_log_lambdas) -> tuple:
    """ρ by its optimiser (the gradient of log λ = ρ + σ is ρ's), clipped so that λ stays within the bounds."""
    grad = grad_log_lambdas
    if budget is not None:
      grad = grad - jnp.mean(grad)  # the budget sets λ's level through σ; the meta-gradient moves λ between layers
    rho, rho_opt_state = state.rho, state.rho_opt_state
    if learn_lambda and objective.sparse:
      rho_updates, rho_opt_state = state.rho_tx.update(grad, state.rho_opt_state, state.rho)
      rho = optax.apply_updates(state.rho, rho_updates)
    return safeguards.clip_rho(rho, state.budget.lambda_scale)[0], rho_opt_state

  def outer_prox(params, log_lambdas, step) -> tuple:
    """Group soft-thresholding at outer_lr(step)·λ with the channel floor (and the budget's cap); also how many
    groups per layer the floor protected."""
    if not objective.sparse:
      return params, jnp.zeros(spec.num_layers, jnp.int32)
    thresholds = outer_lr(step) * lambdas_from_log(log_lambdas, spec.num_layers)
    engaged = floor_engaged(params, spec, thresholds, objective.min_alive)
    cap = None if budget is None else budget.prox_cap
    return block_soft_threshold(params, spec, thresholds, objective.min_alive, cap=cap), engaged

  def meta_train_step(state: MetaTrainState, meta_batch: MetaBatch):
    g = meta_gradient(state, meta_batch)
    grad_norm = optax.tree.norm((g["grad_params"], g["grad_log_lambdas"]))
    skip = safeguards.skip_step(grad_norm, state.grad_norm_avg, state.accepted_steps)

    params, opt_state = update_weights(state, g["grad_params"])
    rho, rho_opt_state = update_rho(state, g["grad_log_lambdas"])
    params, engaged = outer_prox(params, rho + state.budget.lambda_scale, state.step)
    budget_state = state.budget if budget is None else budget.update(state.budget, params)
    # σ has just moved: clip again so that the λ of the next step (and of the logs) is within the bounds too.
    rho, at_bound = safeguards.clip_rho(rho, budget_state.lambda_scale)
    grad_norm_avg = jnp.where(state.accepted_steps == 0, grad_norm,
                              GRAD_NORM_DECAY * state.grad_norm_avg + (1 - GRAD_NORM_DECAY) * grad_norm)

    updated = state.replace(params=params, batch_stats=g["batch_stats"], rho=rho, budget=budget_state,
                            grad_norm_avg=grad_norm_avg, accepted_steps=state.accepted_steps + 1,
                            opt_state=opt_state, rho_opt_state=rho_opt_state)
    new_state = jax.tree.map(lambda new, old: jnp.where(skip, old, new), updated, state)  # a skipped step
    new_state = new_state.replace(step=state.step + 1)
    metrics = {
        "loss": g["loss"],
        "task_loss": g["task_loss"],
        "lambda": lambdas_from_log(new_state.log_lambdas, spec.num_layers),
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
