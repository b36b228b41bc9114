"""Safeguards around the outer step: λ bounds, skipping bad meta-gradients, a host-side λ runaway warning, and the
checks that stop a run which diverged (non-finite state, or mostly skipped steps) before it is saved.

The channel floor (no layer loses its last `min_channels` channels) lives in the prox itself
(`msp.sparsity.block_soft_threshold(min_alive=...)`).
"""
import dataclasses
import math
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from msp.train.config import ConfigError

# The parts of a MetaTrainState whose finiteness the step reports, in the order of its `finite` metric.
STATE_PARTS = ("parameters", "BatchNorm statistics", "λ and the budget", "optimiser state")


class DivergedError(ConfigError):
  """Training produced a state that must not be saved (non-finite), or stopped learning (most steps skipped)."""


def all_finite(tree) -> jax.Array:
  """Scalar bool: every floating-point leaf of `tree` is free of NaN and ±inf (integer leaves count as finite)."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype,
                                                                                          jnp.floating)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def finite_parts(state) -> jax.Array:
  """(len(STATE_PARTS),) bool: which parts of a MetaTrainState are finite."""
  return jnp.stack([all_finite(state.params), all_finite(state.batch_stats), all_finite((state.rho, state.budget)),
                    all_finite((state.opt_state, state.rho_opt_state))])


def nonfinite_names(finite: np.ndarray) -> list[str]:
  """The STATE_PARTS whose flag in `finite` (from `finite_parts`) is False."""
  return [name for name, ok in zip(STATE_PARTS, np.asarray(finite)) if not ok]


@dataclasses.dataclass(frozen=True)
class Safeguards:
  """lambda_min / lambda_max: bounds on every λ_ℓ (ρ is clipped to their logs after each update).
  min_channels: channels per layer that no prox may remove (≥ 1).
  outlier_factor: skip an outer step whose meta-gradient norm exceeds this × its running average (0: never skip
  finite steps); non-finite meta-gradients are always skipped. outlier_warmup: accepted steps before outliers count.
  runaway_factor / runaway_window: warn when a λ_ℓ changes by more than this factor within this many steps.
  max_skipped_fraction / skip_window: a run stops when more than this fraction of its last `skip_window` outer
  steps were skipped (it is not learning any more)."""
  lambda_min: float = 1e-8
  lambda_max: float = 10.0
  min_channels: int = 1
  outlier_factor: float = 10.0
  outlier_warmup: int = 10
  runaway_factor: float = 100.0
  runaway_window: int = 100
  max_skipped_fraction: float = 0.5
  skip_window: int = 50

  def __post_init__(self):
    if not 0 < self.lambda_min < self.lambda_max:
      raise ValueError(f"safeguards: need 0 < lambda_min ({self.lambda_min}) < lambda_max ({self.lambda_max})")
    if not 0 < self.max_skipped_fraction < 1 or self.skip_window < 1:
      raise ValueError(f"safeguards: need 0 < max_skipped_fraction ({self.max_skipped_fraction}) < 1 and "
                       f"skip_window ({self.skip_window}) ≥ 1")
    if self.min_channels < 1:
      raise ValueError(f"safeguards.min_channels={self.min_channels} must be ≥ 1 (a layer with no channel is dead)")

  def clip_rho(self, rho: jax.Array, scale: jax.Array = 0.0) -> tuple[jax.Array, jax.Array]:
    """(ρ clipped so that λ = exp(ρ + scale) lies within the bounds, bool mask of the entries that sat at a bound).

    scale: budget mode's shared log-scale σ (0 without a budget), so the bounds hold for the λ actually used."""
    lo, hi = math.log(self.lambda_min) - scale, math.log(self.lambda_max) - scale
    clipped = jnp.clip(rho, lo, hi)
    return clipped, (rho <= lo) | (rho >= hi)

  def skip_step(self, grad_norm: jax.Array, grad_norm_avg: jax.Array, accepted_steps: jax.Array) -> jax.Array:
    """Scalar bool: reject this step (non-finite, or an outlier against the running average)."""
    outlier = (self.outlier_factor > 0) & (accepted_steps >= self.outlier_warmup) & (
        grad_norm > self.outlier_factor * grad_norm_avg)
    return ~jnp.isfinite(grad_norm) | outlier


class LambdaWatch:
  """Host-side: warns (once per layer and window) when λ_ℓ moves by more than `factor` within `window` steps."""

  def __init__(self, layer_names: tuple[str, ...], factor: float, window: int):
    self.names, self.factor, self.window = layer_names, factor, window
    self.history: deque[tuple[int, np.ndarray]] = deque()
    self.warned_at: dict[int, int] = {}

  def update(self, step: int, lambdas: np.ndarray) -> list[str]:
    """Records λ (L,) at `step`; returns (and logs) the warnings raised now."""
    lambdas = np.broadcast_to(np.asarray(lambdas, np.float64), (len(self.names),))
    self.history.append((step, lambdas))
    while self.history and self.history[0][0] < step - self.window:
      self.history.popleft()
    stacked = np.stack([l for _, l in self.history])
    ratio = stacked.max(axis=0) / np.maximum(stacked.min(axis=0), 1e-30)
    warnings = []
    for i in np.flatnonzero(ratio > self.factor):
      if step - self.warned_at.get(i, -self.window - 1) > self.window:
        self.warned_at[i] = step
        warnings.append(f"λ of {self.names[i]} moved by ×{ratio[i]:.3g} within {self.window} steps "
                        f"(now {lambdas[i]:.3g}): possible runaway; consider a lower optim.rho_lr or tighter "
                        f"safeguards.lambda_min/lambda_max")
    for w in warnings:
      logging.warning(w)
    return warnings
