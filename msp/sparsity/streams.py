"""The sparsity groups of a config's network: `sparsity.include` and `grouping`; in budget mode with a FLOPs target
(`flops_budget`), one layer per residual stream and prox thresholds relative to each layer's scale.

A residual-stream channel is written by every conv whose output is added into the stream (a block's last conv and
its shortcut, or the stem and the identity blocks' last convs), and it costs FLOPs in every consumer until all of
them zero it. Per-conv groups almost never zero the same index in all of them, so group lasso then removes only the
producers' own FLOPs; tied, group c is channel c of every producer, and zeroing it removes the channel from the
stream.
"""
import jax
import jax.numpy as jnp
import ml_collections

from msp.models import MultiTaskNet
from msp.sparsity.groups import GroupSpec


def stream_ties(model: MultiTaskNet, sparsified: set[str]) -> dict[str, tuple[str, ...]]:
  """{"backbone/stage<s>_stream": its producers' module paths} for every residual stream of `model`'s backbone with
  at least two producers in `sparsified` (module paths, e.g. "backbone/stage1_block0/conv2"); a stream is named
  after the stage of its last producer."""
  ties = {}
  for space in model.backbone.channel_spaces():
    members = tuple(f"backbone/{conv}" for conv in space if f"backbone/{conv}" in sparsified)
    if len(members) > 1:
      ties[f"backbone/{space[-1].split('_')[0]}_stream"] = members
  return ties


def flops_budget(config: ml_collections.ConfigDict) -> bool:
  """Whether the run `config` is in budget mode with a FLOPs target. That mode ties residual streams (`stream_ties`),
  puts the prox thresholds in units of each layer's scale (`GroupSpec.relative`) and starts each λ_ℓ at its
  channel's cost: on synthetic scenes each of the three took the budget closer to magnitude pruning at equal FLOPs
  (docs/budget_mode.md)."""
  return bool(config.budget.enabled) and config.budget.target_kind == "flops_kept"


def group_spec(config: ml_collections.ConfigDict, model: MultiTaskNet) -> GroupSpec:
  """The GroupSpec of the run `config` (`sparsity.include`, `sparsity.grouping`, `flops_budget`) for `model` on
  `config.image_size`² images (from parameter shapes alone: nothing is computed on arrays)."""
  size = config.image_size
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))["params"]
  options = dict(include=config.sparsity.include, grouping=config.sparsity.grouping, relative=flops_budget(config))
  spec = GroupSpec.from_params(params, **options)
  if not flops_budget(config):
    return spec
  return GroupSpec.from_params(params, ties=stream_ties(model, set(spec.names)), **options)
