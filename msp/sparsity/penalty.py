"""The group-lasso penalty Ω_ℓ(θ) = w_ℓ Σ_c ‖θ_{g_c}‖₂ of each sparsified layer ℓ."""
import jax
import jax.numpy as jnp

from msp.sparsity.groups import GroupSpec


def group_lasso(params, spec: GroupSpec) -> jax.Array:
  """(L,) per-layer penalties Ω_ℓ (same units as the parameters); the total regulariser is Σ_ℓ λ_ℓ Ω_ℓ."""
  norms = spec.group_norms(params)
  return jnp.stack([layer.weight * jnp.sum(n) for layer, n in zip(spec.layers, norms)])
