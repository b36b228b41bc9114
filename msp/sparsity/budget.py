"""Budget mode: a user target on channels removed or backbone FLOPs kept.

The outer objective becomes L_q(θ_K) + μ·R(θ_K) with R(θ) ∝ Σ_ℓ c_ℓ Ω_ℓ(θ), c_ℓ the normalised cost of one channel
of layer ℓ: through θ_K the cost term steers λ towards layers where cutting is cheap for the tasks and saves much.
The level of every λ is set by a shared log-scale σ (λ_ℓ = exp(ρ_ℓ + σ)). After every outer step a controller
moves μ (dual ascent) and σ (integral control) on the gap to the target predicted a few steps ahead (`update`);
gap > 0 while the network is larger than the target. Channels die tens of steps after λ crosses their threshold,
too late for any controller to react, so by default the outer prox is also capped at the target (`cap`): it may zero
only as many channels as the target allows, so a budget approaches its target from the dense side and cannot
overshoot it.
"""
import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from msp.sparsity.costs import CostModel
from msp.sparsity.penalty import group_lasso
from msp.sparsity.prox import Cap, spared_by_cap, spared_by_kept_fraction
from msp.sparsity.stats import sparsity_stats

BUDGET_TARGETS = ("channels_removed", "flops_kept")


@dataclasses.dataclass(frozen=True)
class Budget:
  """target_kind: `channels_removed` (fraction of the sparsified layers' channels that are zero) or `flops_kept`
  (fraction of the dense backbone's FLOPs); target in (0, 1): the network may end up smaller, never larger (μ ≥ 0,
  the multiplier of an inequality); costs: (L,) c_ℓ; dual_lr: η_μ per unit of gap.
  scale_lr / horizon: σ's integral gain per unit of gap, and how many steps ahead the controllers predict the gap
  (msp's settings by default; tests set others).
  cap: the outer prox never goes past the target (`prox_cap`), letting the groups nearest to dying (smallest
  norm / (τ_ℓ w_ℓ)) go first."""
  target_kind: str
  target: float
  costs: np.ndarray
  cost_model: CostModel
  dual_lr: float
  scale_lr: float = 0.02
  horizon: float = 150.0
  cap: bool = True

  def __post_init__(self):
    if self.target_kind not in BUDGET_TARGETS:
      raise ValueError(f"budget.target_kind={self.target_kind!r}; choose one of {BUDGET_TARGETS}")
    if not 0.0 < self.target < 1.0:
      raise ValueError(f"budget.target={self.target} must lie strictly between 0 and 1")

  def measure(self, params) -> jax.Array:
    """The quantity the target is about (scalar fraction), measured on exactly-zero groups of `params`."""
    if self.target_kind == "flops_kept":
      return self.cost_model.flops_kept(params)
    return sparsity_stats(params, self.cost_model.spec)["group_sparsity_total"]

  @property
  def prox_cap(self) -> Cap | None:
    """With `cap`, the cap of the outer prox (`block_soft_threshold`'s `cap`); else None.

    `channels_removed`: at most ⌊target · G⌋ groups of all layers together are zero afterwards. `flops_kept`: the
    groups the prox may zero leave at least the target's FLOPs even if they all die.
    """
    if not self.cap:
      return None
    if self.target_kind == "channels_removed":
      max_removed = int(self.target * sum(layer.num_groups for layer in self.cost_model.spec.layers))
      return lambda norms, thresholds: spared_by_cap(norms, thresholds, max_removed)
    return lambda norms, thresholds: spared_by_kept_fraction(norms, thresholds, self.cost_model.flops_kept_by_alive,
                                                             self.target)

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

  def update(self, state: "BudgetState", params) -> "BudgetState":
    """One controller step after an outer update, from the gap measured on `params`.

    Both act on the gap predicted `horizon` steps ahead from its recent trend, gap + horizon·trend: channels die
    tens of steps after λ crosses their threshold, so acting on the current gap alone winds up and overshoots.
    μ ← max(0, μ + η_μ·predicted gap): dual ascent on the cost term's weight.
    σ ← σ + scale_lr·predicted gap: integral control of λ's shared log-scale.
    """
    gap = self.gap(params)
    trend = jnp.where(state.steps > 0, TREND_DECAY * state.trend + (1 - TREND_DECAY) * (gap - state.gap), 0.0)
    predicted = gap + self.horizon * trend
    mu = jnp.maximum(0.0, state.mu + self.dual_lr * predicted)
    lambda_scale = state.lambda_scale + self.scale_lr * predicted
    return BudgetState(mu=mu, lambda_scale=lambda_scale, gap=gap, trend=trend, steps=state.steps + 1)


TREND_DECAY = 0.9


@flax.struct.dataclass
class BudgetState:
  """The controller's state: mu (dual variable), lambda_scale (σ, λ_ℓ = exp(ρ_ℓ + σ)), the last gap, its
  smoothed per-step change, and the number of updates."""
  mu: jax.Array
  lambda_scale: jax.Array
  gap: jax.Array
  trend: jax.Array
  steps: jax.Array

  @classmethod
  def create(cls) -> "BudgetState":
    zero = lambda dtype=jnp.float32: jnp.zeros([], dtype)  # distinct buffers: the train step donates them
    return cls(mu=zero(), lambda_scale=zero(), gap=zero(), trend=zero(), steps=zero(jnp.int32))
