"""The proximal operator of the group lasso (block soft-threshold), as a function and as an optax transformation.

prox_{τΩ}(θ)_g = θ_g · max(0, 1 − τ_ℓ w_ℓ / ‖θ_g‖₂) for each group g of layer ℓ, where τ_ℓ is the layer's
threshold (a step size times λ_ℓ) and w_ℓ its group weight (with a `relative` GroupSpec, τ_ℓ w_ℓ m_ℓ, m_ℓ the layer's
mean alive group norm held constant). Differentiable in θ and τ wherever ‖θ_g‖₂ ≠ τ_ℓ w_ℓ;
groups at or below the threshold, and all-zero groups, map to zero with zero gradient (no NaN).
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from msp.sparsity.groups import GroupSpec


def top_m_mask(norms: jax.Array, m: int) -> jax.Array:
  """(G,) bool: the m largest entries of (G,) `norms` (ties may add more); all False when m = 0."""
  if m <= 0:
    return jnp.zeros(norms.shape, bool)
  return norms >= jnp.sort(norms)[-min(m, norms.shape[0])]


def shrink_factors(norms: jax.Array, threshold: jax.Array, min_alive: int = 0) -> jax.Array:
  """max(0, 1 − threshold/norm) per group, safely: (G,) norms, scalar threshold (already times w_ℓ) → (G,).

  min_alive = m > 0 exempts the m largest groups from the prox (factor 1), so no layer can lose every channel.
  """
  alive = norms > threshold
  factors = jnp.where(alive, 1.0 - threshold / jnp.where(alive, norms, 1.0), 0.0)
  return jnp.where(top_m_mask(norms, min_alive), 1.0, factors)


# Budget mode's cap on the outer prox: (per layer (G_ℓ,) group norms, per layer scalar thresholds τ_ℓ w_ℓ) → per
# layer (G_ℓ,) bool, the groups exempt from the prox (`spared_by_cap`, `spared_by_kept_fraction`).
Cap = Callable[[list[jax.Array], list[jax.Array]], list[jax.Array]]


def block_soft_threshold(params, spec: GroupSpec, thresholds: jax.Array, min_alive: int = 0, cap: Cap | None = None):
  """prox of Σ_ℓ τ_ℓ Ω_ℓ at `params`. thresholds: (L,) τ_ℓ ≥ 0 (step size × λ_ℓ). Returns a params pytree.

  min_alive: the floor of surviving channels per layer (its m largest groups are left unchanged).
  cap: budget mode's cap on what the prox may remove: the groups it spares are left unchanged.
  """
  norms = spec.group_norms(params)
  weighted = spec.prox_thresholds(norms, thresholds)  # τ_ℓ w_ℓ (× m_ℓ with `spec.relative`)
  factors = [shrink_factors(n, t, min_alive) for n, t in zip(norms, weighted)]
  if cap is not None:
    factors = [jnp.where(keep, 1.0, f) for keep, f in zip(cap(norms, weighted), factors)]
  return spec.scale_groups(params, factors)


def _ratios(norms: list[jax.Array], thresholds: list[jax.Array]) -> list[jax.Array]:
  """Per layer, (G_ℓ,) norm / threshold: the order in which a cap lets groups go (lowest first)."""
  return [n / jnp.maximum(t, 1e-30) for n, t in zip(norms, thresholds)]


def spared_by_cap(norms: list[jax.Array], thresholds: list[jax.Array], max_removed: int) -> list[jax.Array]:
  """Per layer, (G_ℓ,) bool: the groups a cap of `max_removed` zero groups in all exempts from the prox.

  Groups are ranked by norm / threshold (scalar per layer, already times w_ℓ): the prox may zero the
  `max_removed` lowest, which include the groups that are zero already; ties at the cut are all spared.
  """
  ratios = _ratios(norms, thresholds)
  flat = jnp.concatenate(ratios)
  if max_removed >= flat.shape[0]:
    return [jnp.zeros(r.shape, bool) for r in ratios]
  cut = jnp.sort(flat)[max_removed]
  return [r >= cut for r in ratios]


def spared_by_kept_fraction(norms: list[jax.Array], thresholds: list[jax.Array],
                            kept: Callable[[list[jax.Array]], jax.Array], floor: float) -> list[jax.Array]:
  """Per layer, (G_ℓ,) bool: the groups exempt from the prox so that the network keeps at least `floor` of a cost.

  kept: per layer (G_ℓ,) bool alive masks → the fraction of the cost those channels keep (e.g.
  `CostModel.flops_kept_by_alive`), which must not grow when channels die. Ranked as in `spared_by_cap`, the prox may
  zero the m lowest groups for the largest m whose survivors alone keep ≥ floor (found by bisection: ⌈log₂(G+1)⌉
  evaluations of `kept`), so even if every one of them dies the network keeps at least `floor`.
  """
  ratios = _ratios(norms, thresholds)
  cuts = jnp.concatenate([jnp.sort(jnp.concatenate(ratios)), jnp.asarray([jnp.inf])])
  survivors = lambda m: [r >= cuts[m] for r in ratios]  # the groups outside the m lowest (none when m = G)
  feasible = lambda m: kept(survivors(m)) >= floor
  total = cuts.shape[0] - 1

  def bisect(_, bounds):  # invariant: lo feasible (m = 0 removes nothing), hi infeasible or hi = G
    lo, hi = bounds
    mid = (lo + hi) // 2
    ok = feasible(mid)
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, hi = jax.lax.fori_loop(0, max(1, total.bit_length()), bisect, (jnp.int32(0), jnp.int32(total)))
  return survivors(jnp.where(feasible(hi), hi, lo))


def floor_engaged(params, spec: GroupSpec, thresholds: jax.Array, min_alive: int) -> jax.Array:
  """(L,) int: how many of each layer's `min_alive` largest groups the prox would have zeroed without the floor."""
  norms = spec.group_norms(params)
  return jnp.stack([jnp.sum(top_m_mask(n, min_alive) & (n <= t))
                    for n, t in zip(norms, spec.prox_thresholds(norms, thresholds))])


class ProximalGroupLassoState(NamedTuple):
  count: jax.Array


def proximal_group_lasso(spec: GroupSpec, lambdas: jax.Array,
                         learning_rate: float | Callable[[jax.Array], jax.Array]) -> optax.GradientTransformation:
  """Chain after an optimiser for proximal training with fixed λ: θ ← prox_{η_t λ Ω}(θ + u).

  lambdas: (L,) λ_ℓ per sparsified layer, or a scalar for all; learning_rate: η (a float or an optax schedule of
  the step count), the same step size as the optimiser's so that the threshold is η_t·λ. Needs `params` in
  `update`. Parameters outside the spec's layers pass through unchanged.
  """
  lambdas = jnp.broadcast_to(jnp.asarray(lambdas), (spec.num_layers,))
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init_fn(params):
    del params
    return ProximalGroupLassoState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("proximal_group_lasso needs the current params: call tx.update(grads, state, params)")
    stepped = optax.apply_updates(params, updates)
    proxed = block_soft_threshold(stepped, spec, schedule(state.count) * lambdas)
    new_updates = jax.tree.map(lambda new, old: new - old, proxed, params)
    return new_updates, ProximalGroupLassoState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)
