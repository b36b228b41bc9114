"""Magnitude pruning to a FLOPs target: the standard structured-pruning baseline.

The channels (groups) with the smallest l2 norms are zeroed until the backbone keeps at most a given fraction of
its FLOPs (`CostModel.flops_kept`). Two ways to rank channels across layers:
  uniform  every layer keeps the same fraction q of its channels (its ⌈q·G_ℓ⌉ largest), q as large as the target
           allows;
  global   one threshold on layer-normalised norms ‖θ_g‖ / mean_g ‖θ_g‖ (norms of different layers differ in
           scale), as low as the target allows.
Every layer keeps at least `min_channels` (its largest), as the proximal step's floor does. Kept sets grow with q
(or as the threshold falls), and so do the FLOPs kept: a bisection over the values where the kept set changes
finds the largest set within the target.
"""
import fractions
import math
from typing import Callable, Sequence

import numpy as np

from msp.sparsity.costs import CostModel
from msp.sparsity.groups import GroupSpec

PRUNE_SCOPES = ("uniform", "global")  # prune.scope


def magnitude_masks(norms: Sequence[np.ndarray], flops_kept: Callable[[list[np.ndarray]], float], target: float,
                    scope: str, min_channels: int = 1) -> list[np.ndarray]:
  """The channels to keep: per layer, a (G_ℓ,) bool mask.

  norms: per layer, (G_ℓ,) group norms (dead groups have norm 0 and are ranked last).
  flops_kept: masks → fraction of the dense backbone's FLOPs the network with those channels keeps.
  target: the largest fraction of FLOPs allowed, in (0, 1].
  Returns the largest kept set of `scope`'s family whose FLOPs fraction is ≤ target; when even `min_channels`
  per layer exceed it, that floor (the caller reports the fraction reached).
  """
  if scope not in PRUNE_SCOPES:
    raise ValueError(f"prune.scope={scope!r}; choose one of {PRUNE_SCOPES}")
  if not 0 < target <= 1:
    raise ValueError(f"prune.flops_kept={target!r} must lie in (0, 1]")
  norms = [np.asarray(n, np.float64) for n in norms]
  order = [np.argsort(-n, kind="stable") for n in norms]  # largest first

  def keep_top(counts: Sequence[int]) -> list[np.ndarray]:
    masks = []
    for o, k in zip(order, counts):
      mask = np.zeros(len(o), bool)
      mask[o[:k]] = True
      masks.append(mask)
    return masks

  floor = [min(min_channels, len(n)) for n in norms]
  if scope == "uniform":
    # kept fractions q = k/G_ℓ, exact: each layer keeps its ⌈q·G_ℓ⌉ largest
    candidates = sorted({fractions.Fraction(k, len(n)) for n in norms for k in range(len(n) + 1)})
    family = lambda q: keep_top([max(f, math.ceil(q * len(n))) for f, n in zip(floor, norms)])
  else:
    scores = [n / max(np.mean(n), np.finfo(np.float64).tiny) for n in norms]
    candidates = sorted({float(v) for s in scores for v in s}, reverse=True)  # thresholds, from the highest
    family = lambda t: keep_top([max(f, int(np.sum(s >= t))) for f, s in zip(floor, scores)])
  # the kept set grows along `candidates`: bisect for the last one within the target (-1: only the floor)
  low, high = -1, len(candidates)
  while high - low > 1:
    middle = (low + high) // 2
    if flops_kept(family(candidates[middle])) <= target:
      low = middle
    else:
      high = middle
  return family(candidates[low]) if low >= 0 else keep_top(floor)


def magnitude_prune(params, spec: GroupSpec, cost_model: CostModel, target: float, scope: str,
                    min_channels: int = 1):
  """`params` with the backbone's smallest channels zeroed (`magnitude_masks`) so that the network keeps at most
  `target` of the dense backbone's FLOPs. Returns (params, the FLOPs fraction reached)."""
  norms = [np.asarray(n) for n in spec.group_norms(params)]
  flops = lambda masks: float(cost_model.flops_kept_by_alive(masks))
  masks = magnitude_masks(norms, flops, target, scope, min_channels)
  pruned = spec.scale_groups(params, masks)
  return pruned, float(cost_model.flops_kept(pruned))
