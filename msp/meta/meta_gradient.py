"""The meta-objective of one episode and of a meta-batch, and the registry of meta-gradient modes.

second_order  jax.grad through all K inner steps (prox included): the exact meta-gradient.
first_order   inner gradients are constants (stop_gradient); θ and λ still get gradients through every prox.
              Exact for K = 1 only: at K = 3 it was measured 10–137 % off the true meta-gradient (once with the
              wrong sign), and it is exactly 0 for λ of a layer whose groups are all dead.
reference     the authors' public prototype: first-order, no prox in the inner loop, λ·Ω(θ_K) added to the
              query loss. Its λ-gradient is λΩ ≥ 0, so it can only push λ down.
joint         no meta-learning: no inner loop, the outer loss is the multi-task loss at θ on support ∪ query.
              With sparsity on, λ acts only through the outer prox and gets no gradient: fixed-λ proximal
              training (the "Less is More" baseline); with sparsity off, dense multi-task training.
"""
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from msp.meta.episodes import MetaBatch
from msp.meta.inner_loop import adapt
from msp.meta.lambdas import lambdas_from_log
from msp.meta.objective import MultiTaskLoss
from msp.sparsity import Budget, GroupSpec, block_soft_threshold, group_lasso

Params = Any


@dataclasses.dataclass(frozen=True)
class MetaGradientMode:
  """How λ enters and how gradients flow: a registry entry, so a new variant is one line."""
  inner_prox: bool
  stop_inner_gradient: bool
  penalty_in_outer_loss: bool
  inner_loop: bool = True


META_GRADIENT_MODES = {
    "second_order": MetaGradientMode(inner_prox=True, stop_inner_gradient=False, penalty_in_outer_loss=False),
    "first_order": MetaGradientMode(inner_prox=True, stop_inner_gradient=True, penalty_in_outer_loss=False),
    "reference": MetaGradientMode(inner_prox=False, stop_inner_gradient=True, penalty_in_outer_loss=True),
    "joint": MetaGradientMode(inner_prox=False, stop_inner_gradient=False, penalty_in_outer_loss=False,
                              inner_loop=False),
}


@dataclasses.dataclass(frozen=True)
class MetaObjective:
  """Static description of the meta-objective; its methods are pure functions of arrays.

  sparse=False turns every λ term off (plain MAML, the "meta-learning without sparsity" baseline).
  min_alive: the floor of surviving channels per layer in every prox. budget: adds μ·R(θ_K) to the query loss
  (budget mode); None is the faithful objective.
  """
  loss: MultiTaskLoss
  spec: GroupSpec
  inner_steps: int
  inner_lr: float
  mode: str = "second_order"
  sparse: bool = True
  remat: bool = False
  inner_batch_stats: bool = False
  min_alive: int = 0
  budget: Budget | None = None

  def __post_init__(self):
    if self.mode not in META_GRADIENT_MODES:
      raise ValueError(f"meta.mode={self.mode!r}; choose one of {sorted(META_GRADIENT_MODES)}")

  def adapt(self, params: Params, log_lambdas: jax.Array, batch_stats: Params,
            episode: MetaBatch) -> tuple[Params, Params]:
    """The inner loop of this mode on the episode's support set → (adapted params, batch_stats).

    Without an inner loop (`joint`) the params come back unchanged.
    """
    mode = META_GRADIENT_MODES[self.mode]
    if not mode.inner_loop:
      return params, batch_stats
    prox = None
    if self.sparse and mode.inner_prox:
      thresholds = self.inner_lr * lambdas_from_log(log_lambdas, self.spec.num_layers)
      prox = functools.partial(block_soft_threshold, spec=self.spec, thresholds=thresholds, min_alive=self.min_alive)
    return adapt(self.loss, params, batch_stats, episode.support, episode.task_mask, steps=self.inner_steps,
                 lr=self.inner_lr, prox=prox, stop_inner_gradient=mode.stop_inner_gradient, remat=self.remat,
                 update_batch_stats=self.inner_batch_stats)

  def episode_loss(self, params: Params, log_lambdas: jax.Array, batch_stats: Params, episode: MetaBatch,
                   mu: jax.Array = 0.0) -> tuple[jax.Array, tuple[jax.Array, Params]]:
    """Query loss after adapting on the support set (+ μ·R(θ_K) in budget mode); `joint`: loss on support ∪
    query at θ. episode: no E axis.

    Returns (scalar outer loss, ((T,) per-task query losses, batch_stats updated by the query forward)).
    """
    fast, stats = self.adapt(params, log_lambdas, batch_stats, episode)
    query = episode.query
    if not META_GRADIENT_MODES[self.mode].inner_loop:
      query = jax.tree.map(lambda s, q: jnp.concatenate([s, q]), episode.support, episode.query)
    outer, (per_task, new_stats) = self.loss(fast, stats, query, episode.task_mask)
    if self.sparse and META_GRADIENT_MODES[self.mode].penalty_in_outer_loss:
      lambdas = lambdas_from_log(log_lambdas, self.spec.num_layers)
      outer = outer + jnp.sum(lambdas * group_lasso(fast, self.spec))
    if self.budget is not None:
      outer = outer + mu * self.budget.regularizer(fast)
    return outer, (per_task, new_stats)

  def episode_value_and_grad(self, params: Params, log_lambdas: jax.Array, batch_stats: Params, mu: jax.Array,
                             episode: MetaBatch):
    """One episode → dict of sums over episodes-to-be: loss, grads (params, ρ), per-task losses, mask, stats."""
    (loss, (per_task, stats)), (g_params, g_log_lambdas) = jax.value_and_grad(
        self.episode_loss, argnums=(0, 1), has_aux=True)(params, log_lambdas, batch_stats, episode, mu)
    return {"loss": loss, "grad_params": g_params, "grad_log_lambdas": g_log_lambdas,
            "task_loss": per_task * episode.task_mask, "task_count": episode.task_mask, "batch_stats": stats}


def _unrolled(fn: Callable[[MetaBatch], Any], meta_batch: MetaBatch):
  outs = [fn(meta_batch.episode(e)) for e in range(meta_batch.num_episodes)]
  return jax.tree.map(lambda *xs: functools.reduce(jnp.add, xs), *outs)


def _mapped(fn, meta_batch):
  # A scan that adds each episode into the running sums: one episode's activations and gradients live at a time.
  # The zeros derive from the data so that, inside shard_map, the carry varies over the mesh as the sums do.
  shapes = jax.eval_shape(fn, meta_batch.episode(0))
  zero = 0.0 * jnp.sum(meta_batch.task_mask)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype) + zero.astype(s.dtype), shapes)
  add_episode = lambda sums, episode: (jax.tree.map(jnp.add, sums, fn(episode)), None)
  return jax.lax.scan(add_episode, zeros, meta_batch)[0]


# How a device loops over its episodes. On XLA:CPU `unroll` is fastest: a `map` body is a loop, inside which XLA:CPU
# runs convolutions through a generic loop (18× slower; benchmarks/meta_step.py). `map` holds one episode at a time:
# 3–3.5× less memory at paper scale (the `paper` configs, meant for accelerators, use it). `jax.vmap` over episodes
# was 3× slower than `unroll` (per-episode kernels become grouped convolutions) and is not offered.
EPISODE_LOOPS = {"unroll": _unrolled, "map": _mapped}


def sum_over_episodes(objective: MetaObjective, params: Params, log_lambdas: jax.Array, batch_stats: Params,
                      meta_batch: MetaBatch, episode_loop: str = "unroll", mu: jax.Array = 0.0) -> dict[str, Any]:
  """Sums `episode_value_and_grad` over the E episodes of `meta_batch` (leading axis E on every leaf)."""
  if episode_loop not in EPISODE_LOOPS:
    raise ValueError(f"meta.episode_loop={episode_loop!r}; choose one of {sorted(EPISODE_LOOPS)}")
  # A nested jit: the episode is traced once, not E times (3 s → 1 s before the first step); XLA inlines the calls.
  episode_value_and_grad = jax.jit(objective.episode_value_and_grad)
  fn = lambda episode: episode_value_and_grad(params, log_lambdas, batch_stats, mu, episode)
  return EPISODE_LOOPS[episode_loop](fn, meta_batch)
