"""λ = exp(ρ): the learned group-lasso strengths, one per sparsified layer or one for the whole backbone.

ρ is the meta-parameter (log space keeps λ positive and lets it move across orders of magnitude).
"""
import math

import jax
import jax.numpy as jnp

LAMBDA_MODES = ("per_layer", "global")


def init_rho(num_layers: int, mode: str, lambda_init: float) -> jax.Array:
  """ρ of shape (L,) for `per_layer` or (1,) for `global`, all equal to log(lambda_init)."""
  if mode not in LAMBDA_MODES:
    raise ValueError(f"sparsity.lambda_mode={mode!r}; choose one of {LAMBDA_MODES}")
  if not lambda_init > 0:
    raise ValueError(f"sparsity.lambda_init={lambda_init} must be > 0 (λ = exp(ρ))")
  size = num_layers if mode == "per_layer" else 1
  return jnp.full((size,), math.log(lambda_init), jnp.float32)


def lambdas_from_log(log_lambdas: jax.Array, num_layers: int) -> jax.Array:
  """(L,) or (1,) log λ → (L,) λ_ℓ, broadcasting a global one to every layer."""
  return jnp.broadcast_to(jnp.exp(log_lambdas), (num_layers,))
