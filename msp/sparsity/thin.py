"""Thin dense networks: a backbone with every width scaled by one factor to a FLOPs target (the thin baseline).

A thin backbone is the backbone of `fields` with its stem width and every stage width w replaced by round(s·w)
(half up, at least 1; a "deep" stem at least 2, as its first convs are half as wide), one factor s for all of them;
depths, strides, dilations and blocks stay. Its cost is the cost model's (`msp.sparsity.costs.backbone_flops`): FLOPs
of one forward pass at batch 1 on image_size² images, 2 per multiply-add of every conv.
"""
import dataclasses
import math
from typing import Any, Mapping

from msp.models.factory import backbone_from_fields
from msp.sparsity.costs import backbone_flops


@dataclasses.dataclass(frozen=True)
class ThinBackbone:
  """fields: the thin backbone's `ResNet` fields (`config.model.backbone`'s form; stem_width and widths scaled);
  width_factor: the s they were scaled by (dimensionless); flops_fraction: its FLOPs / the full backbone's FLOPs
  (dimensionless, in (0, 1])."""
  fields: dict
  width_factor: float
  flops_fraction: float


def scaled_widths(fields: Mapping[str, Any], width_factor: float) -> dict:
  """`fields` (`ResNet` fields) with stem_width and every entry of widths w replaced by max(minimum, ⌊s·w + ½⌋),
  s = `width_factor` ≥ 0; minimum 2 for a "deep" stem's width (its first convs have width // 2), else 1."""
  scale = lambda w, minimum=1: max(minimum, math.floor(width_factor * w + 0.5))
  thin = dict(fields)
  thin["stem_width"] = scale(fields["stem_width"], 2 if fields["stem"] == "deep" else 1)
  thin["widths"] = tuple(scale(w) for w in fields["widths"])
  return thin


def thin_backbone(fields: Mapping[str, Any], flops_fraction: float, image_size: int) -> ThinBackbone:
  """The thin backbone of `fields` whose FLOPs / the full backbone's FLOPs (on image_size² images) is the largest
  value ≤ `flops_fraction` (in (0, 1]) that one width factor s reaches with integer widths (`scaled_widths`).

  Bisection on s in [0, 1] over the cost model of each thin backbone (memoised by widths): the fraction is a
  non-decreasing step function of s that jumps where some s·w crosses k + ½. Two distinct jump points lie at least
  1 / (2·W²) apart (W the largest width), so once the bracket is narrower than that, its lower end's widths are the
  answer. ValueError when `flops_fraction` is out of range, below what the narrowest backbone (every width at its
  minimum) costs, or when `fields` has per-conv widths (`conv_widths`: a pruned network, not a width grid).
  """
  if not 0 < flops_fraction <= 1:
    raise ValueError(f"the FLOPs fraction of a thin backbone must lie in (0, 1], not {flops_fraction}")
  if fields.get("conv_widths"):
    raise ValueError("a backbone with per-conv widths (conv_widths, a pruned network) cannot be thinned by one factor")
  full = backbone_flops(backbone_from_fields(fields), image_size)
  fractions = {}

  def fraction(width_factor: float) -> float:
    thin = scaled_widths(fields, width_factor)
    key = (thin["stem_width"], thin["widths"])
    if key not in fractions:
      fractions[key] = backbone_flops(backbone_from_fields(thin), image_size) / full
    return fractions[key]

  low, high = 0.0, 1.0
  if fraction(low) > flops_fraction:
    raise ValueError(f"the narrowest backbone (every width at its minimum) keeps {fraction(low):.4g} of the FLOPs, "
                     f"more than the target {flops_fraction}")
  if fraction(high) <= flops_fraction:
    return ThinBackbone(scaled_widths(fields, high), high, fraction(high))
  resolution = 1 / (2 * max(fields["stem_width"], *fields["widths"]) ** 2)
  while high - low >= resolution:  # invariant: fraction(low) ≤ target < fraction(high)
    middle = (low + high) / 2
    if fraction(middle) <= flops_fraction:
      low = middle
    else:
      high = middle
  return ThinBackbone(scaled_widths(fields, low), low, fraction(low))
