"""The proximal operator of the group lasso (block soft-threshold), as a function and as an optax transformation.

prox_{τΩ}(θ)_g = θ_g · max(0, 1 − τ_ℓ w_ℓ / ‖θ_g‖₂) for each group g of layer ℓ, where τ_ℓ is the layer's
threshold (a step size times λ_ℓ) and w_ℓ its group weight. Differentiable in θ and τ wherever ‖θ_g‖₂ ≠ τ_ℓ w_ℓ;
groups at or below the threshold, and all-zero groups, map to zero with zero gradient (no NaN).
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from msp.sparsity.groups import GroupSpec


def shrink_factors(norms: jax.Array, threshold: jax.Array) -> jax.Array:
  """max(0, 1 − threshold/norm) per group, safely: (G,) norms, scalar threshold (already times w_ℓ) → (G,)."""
  alive = norms > threshold
  return jnp.where(alive, 1.0 - threshold / jnp.where(alive, norms, 1.0), 0.0)


def block_soft_threshold(params, spec: GroupSpec, thresholds: jax.Array):
  """prox of Σ_ℓ τ_ℓ Ω_ℓ at `params`. thresholds: (L,) τ_ℓ ≥ 0 (step size × λ_ℓ). Returns a params pytree."""
  norms = spec.group_norms(params)
  factors = [shrink_factors(n, thresholds[i] * layer.weight) for i, (layer, n) in enumerate(zip(spec.layers, norms))]
  return spec.scale_groups(params, factors)


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
