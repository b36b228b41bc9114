"""Budget mode: a user target on channels removed or backbone FLOPs kept, enforced by a dual variable μ ≥ 0.

The outer objective becomes L_q(θ_K) + μ·R(θ_K) with R(θ) ∝ Σ_ℓ c_ℓ Ω_ℓ(θ), c_ℓ the normalised cost of one channel
of layer ℓ. Through θ_K, the cost term raises λ_ℓ where cutting is cheap for the tasks and saves much: the
meta-gradient chooses *where* to cut, μ *how much*. After every outer step, μ ← max(0, μ + η_μ·gap), gap > 0 while
the network is larger than the target.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from msp.sparsity.costs import CostModel
from msp.sparsity.penalty import group_lasso

BUDGET_TARGETS = ("channels_removed", "flops_kept")


@dataclasses.dataclass(frozen=True)
class Budget:
  """target_kind: `channels_removed` (fraction of the sparsified layers' channels that are zero) or `flops_kept`
  (fraction of the dense backbone's FLOPs); target in (0, 1); costs: (L,) c_ℓ; dual_lr: η_μ per unit of gap."""
  target_kind: str
  target: float
  costs: np.ndarray
  cost_model: CostModel
  dual_lr: float

  def __post_init__(self):
    if self.target_kind not in BUDGET_TARGETS:
      raise ValueError(f"budget.target_kind={self.target_kind!r}; choose one of {BUDGET_TARGETS}")
    if not 0.0 < self.target < 1.0:
      raise ValueError(f"budget.target={self.target} must lie strictly between 0 and 1")

  def measure(self, params) -> jax.Array:
    """The quantity the target is about (scalar fraction), measured on exactly-zero groups of `params`."""
    if self.target_kind == "flops_kept":
      return self.cost_model.flops_kept(params)
    spec = self.cost_model.spec
    alive = sum(jnp.sum(sq > 0) for sq in spec.group_sqnorms(params))
    total = sum(layer.num_groups for layer in spec.layers)
    return (total - alive) / total

  def gap(self, params) -> jax.Array:
    """> 0 while the network is larger than the target, < 0 once it is smaller (a fraction)."""
    measured = self.measure(params)
    return self.target - measured if self.target_kind == "channels_removed" else measured - self.target

  def regularizer(self, params) -> jax.Array:
    """R(θ) = Σ_ℓ c_ℓ Ω_ℓ(θ) / Σ_ℓ c_ℓ w_ℓ G_ℓ: the cost-weighted mean group norm (scalar, in parameter units).

    The constant denominator keeps μ on the scale of the task losses whatever the network's size.
    """
    spec = self.cost_model.spec
    scale = sum(c * layer.weight * layer.num_groups for c, layer in zip(self.costs, spec.layers))
    return jnp.sum(jnp.asarray(self.costs) * group_lasso(params, spec)) / scale

  def update_mu(self, mu: jax.Array, params) -> jax.Array:
    """One dual-ascent step: max(0, μ + η_μ·gap(params))."""
    return jnp.maximum(0.0, mu + self.dual_lr * self.gap(params))
