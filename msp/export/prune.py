"""Physical pruning: removes the dead channels of a masked dense network from every tensor that they touch.

Backbone conv output channel c is dead when its out_channel group (kernel W[..., c], BatchNorm scale[c] and
bias[c]) is exactly zero, as the training's prox leaves it: after BatchNorm in inference mode the channel is
(0 − mean)·0/√(var + ε) + 0 = 0 whatever the running statistics, and stays 0 through a zero-preserving activation.

Channels are removed per *channel space*: the convs whose outputs are added into one tensor (a residual stream: a
stage's shortcut and the last convs of its blocks) share one, so a stream channel is removed only when it is dead in
every producer; the producers that are dead in a kept channel keep their zero slice. Removing channel c of a space
removes it from each producer's kernel output axis, BatchNorm parameters and statistics, from each consumer's kernel
input axis and, for the space of the backbone's output, from the input axis of each head's feature conv. A consumer
of a dead channel only ever multiplied zeros with it, so the pruned network computes what the masked dense one does
(up to float rounding of the shorter sums).

A space whose channels are all dead (e.g. a block whose residual branch is entirely dead) keeps one zero channel, so
that no tensor has width 0: its consumers then add exact zeros, and such a block still computes
activation(shortcut(x)). `multiple_of` rounds each kept count up (dead channels, lowest index first; never beyond
the dense width) for hardware-friendly shapes.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from msp.models import MultiTaskNet
from msp.models.heads import HEADS
from msp.models.layers import get_activation
from msp.sparsity import DEFAULT_INCLUDE, GroupSpec


class ExportError(ValueError):
  """The network cannot be pruned exactly, or its pruned outputs differ from the dense ones."""


@dataclasses.dataclass(frozen=True)
class PrunePlan:
  """Which channels of every backbone conv a pruned network keeps.

  kept: conv path relative to the backbone (as in `ResNet.channel_sources`) → sorted int64 indices of its kept
    output channels; the convs of one channel space share one array.
  dense: conv path → its output channels in the dense network.
  sources: conv path → the convs that produce its input channels (() for the image).
  features: the convs that produce the backbone's output.
  """
  kept: dict[str, np.ndarray]
  dense: dict[str, int]
  sources: dict[str, tuple[str, ...]]
  features: tuple[str, ...]

  def input_channels(self, conv: str) -> np.ndarray | None:
    """Kept input channels of `conv`, None for a conv that reads the image (all 3 kept)."""
    sources = self.sources[conv]
    return self.kept[sources[0]] if sources else None

  @property
  def feature_channels(self) -> np.ndarray:
    """Kept channels of the backbone's output, the heads' input."""
    return self.kept[self.features[0]]

  @property
  def conv_widths(self) -> tuple[tuple[str, int], ...]:
    """`ResNet.conv_widths` of the pruned backbone: the convs whose width changes ((): the dense network)."""
    return tuple((conv, len(kept)) for conv, kept in self.kept.items() if len(kept) != self.dense[conv])


def kept_channels(alive: np.ndarray, multiple_of: int = 1) -> np.ndarray:
  """Sorted indices of the channels to keep given an (O,) bool alive mask: the alive ones, at least one, their
  count rounded up to a multiple of `multiple_of` (at most O) with the lowest-index dead channels."""
  live, dead = np.flatnonzero(alive), np.flatnonzero(~alive)
  count = min(len(alive), -(-max(len(live), 1) // multiple_of) * multiple_of)
  return np.sort(np.concatenate([live, dead[:count - len(live)]]))


def plan_pruning(model: MultiTaskNet, params, multiple_of: int = 1) -> PrunePlan:
  """The channels that a pruned copy of `model` with `params` (a masked dense network) keeps.

  Raises ExportError when the activation does not map 0 to 0 (a dead channel is then not zero).
  """
  activation = model.backbone.activation
  if float(get_activation(activation)(jnp.zeros(()))) != 0.0:
    raise ExportError(f"activation {activation!r} does not map 0 to 0, so dead channels are not zero and cannot "
                      "be removed exactly")
  if multiple_of < 1:
    raise ExportError(f"multiple_of={multiple_of} must be ≥ 1")
  sources, features = model.backbone.channel_sources()
  spec = GroupSpec.from_params(params, include=DEFAULT_INCLUDE, grouping="out_channel")
  alive = {name.removeprefix("backbone/"): np.asarray(mask) for name, mask in zip(spec.names, spec.alive(params))}
  kept = {}
  for space in model.backbone.channel_spaces():
    indices = kept_channels(np.any([alive[conv] for conv in space], axis=0), multiple_of)
    kept.update({conv: indices for conv in space})
  return PrunePlan(kept={conv: kept[conv] for conv in sources}, dense={conv: len(alive[conv]) for conv in sources},
                   sources=sources, features=features)


def _slices(model: MultiTaskNet, plan: PrunePlan):
  """Yields (variable path, axis, kept indices) for every axis of a variable that pruning shortens."""
  for conv, kept in plan.kept.items():
    module = ("backbone", *conv.split("/"))
    yield ("params", *module, "conv", "kernel"), 3, kept
    for collection, leaf in (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"),
                             ("batch_stats", "var")):
      yield (collection, *module, "norm", leaf), 0, kept
    if plan.sources[conv]:
      yield ("params", *module, "conv", "kernel"), 2, plan.input_channels(conv)
  for task, kind, _ in model.heads:
    for layer in HEADS[kind].feature_layers:
      yield ("params", f"head_{task}", layer, "kernel"), 2, plan.feature_channels


def prune(model: MultiTaskNet, variables: dict, plan: PrunePlan) -> tuple[MultiTaskNet, dict]:
  """(pruned model, its variables): `model` with the backbone widths of `plan`, `variables` ({"params",
  "batch_stats"}) with the removed channels sliced out; every other leaf is unchanged."""
  flat = dict(traverse_util.flatten_dict(variables))
  for path, axis, kept in _slices(model, plan):
    flat[path] = jnp.take(flat[path], kept, axis=axis)
  pruned = model.clone(backbone=model.backbone.clone(conv_widths=plan.conv_widths))
  return pruned, traverse_util.unflatten_dict(flat)


def max_abs_differences(reference: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, float]:
  """{task: max |reference[task] − outputs[task]|} of two networks' outputs on the same images."""
  return {task: float(jnp.max(jnp.abs(reference[task] - outputs[task]))) for task in reference}


def check_exact(differences: dict[str, float], tolerance: float) -> None:
  """Raises ExportError naming each task whose max abs difference exceeds `tolerance`."""
  failed = {task: d for task, d in differences.items() if not d <= tolerance}
  if failed:
    raise ExportError(f"the pruned network's outputs differ from the dense network's by more than {tolerance:g}: "
                      + ", ".join(f"{task} {d:.3g}" for task, d in failed.items()))
