"""MetaTrainState: everything a resumed run needs, as one pytree (one orbax save/restore is the checkpoint)."""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from msp.sparsity.budget import BudgetState

Params = Any


class MetaTrainState(flax.struct.PyTreeNode):
  """step: outer steps taken (skipped ones included); params: θ (backbone) and φ (heads); batch_stats: BatchNorm
  running averages; rho: (L,) or (1,) log λ (meta-learned); budget: the budget controller's state (μ and σ, with
λ_ℓ = exp(ρ_ℓ + σ); all zero without a budget);
  grad_norm_avg / accepted_steps: running meta-gradient norm and count of accepted steps (outlier detection);
  opt_state / rho_opt_state: the outer optimisers' states (tx, rho_tx: static)."""
  step: jax.Array
  params: Params
  batch_stats: Params
  rho: jax.Array
  budget: BudgetState
  grad_norm_avg: jax.Array
  accepted_steps: jax.Array
  opt_state: optax.OptState
  rho_opt_state: optax.OptState
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  rho_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @property
  def log_lambdas(self) -> jax.Array:
    """(L,) or (1,) log λ as the objective uses it: ρ plus budget mode's shared scale σ (0 without a budget)."""
    return self.rho + self.budget.lambda_scale

  @classmethod
  def create(cls, *, params: Params, batch_stats: Params, rho: jax.Array, tx: optax.GradientTransformation,
             rho_tx: optax.GradientTransformation) -> "MetaTrainState":
    return cls(step=jnp.zeros([], jnp.int32), params=params, batch_stats=batch_stats, rho=rho,
               budget=BudgetState.create(), grad_norm_avg=jnp.zeros([]), accepted_steps=jnp.zeros([], jnp.int32),
               opt_state=tx.init(params), rho_opt_state=rho_tx.init(rho), tx=tx, rho_tx=rho_tx)
