"""The sparsity groups of a config's network: `sparsity.include`, `grouping`, `weighting` and
`relative_threshold`, and with `sparsity.tie_streams` one layer per residual stream.

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


def group_spec(sparsity: ml_collections.ConfigDict, model: MultiTaskNet, image_size: int) -> GroupSpec:
  """The GroupSpec of the config section `sparsity` for `model` on image_size² images (from parameter shapes alone:
  nothing is computed on arrays)."""
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
                                             train=False))["params"]
  options = dict(include=sparsity.include, grouping=sparsity.grouping, weighting=sparsity.weighting,
                 relative=sparsity.get("relative_threshold", False))
  spec = GroupSpec.from_params(params, **options)
  if not sparsity.get("tie_streams", False):
    return spec
  return GroupSpec.from_params(params, ties=stream_ties(model, set(spec.names)), **options)
