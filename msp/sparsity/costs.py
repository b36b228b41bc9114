"""What the sparsified layers cost: backbone FLOPs and parameters as functions of which channels are alive.

A conv of kernel (kh, kw, I, O) with output (H, W) costs 2·H·W·kh·kw·I·O FLOPs (multiply and add) and kh·kw·I·O
weights (+ 2·O BatchNorm entries). Its alive input channels are the channels alive in any of the convs that feed
it (`ResNet.channel_sources`; the image's channels are always alive), its alive output channels its non-zero
groups. Heads are not counted: the fractions are of the backbone.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from msp.models import MultiTaskNet
from msp.sparsity.groups import GroupSpec

COST_KINDS = ("flops", "params", "uniform")


@dataclasses.dataclass(frozen=True)
class ConvCost:
  """One backbone conv: FLOPs and weights per (input channel, output channel) pair, sources, channel counts."""
  name: str
  flops_per_pair: float
  weights_per_pair: int
  in_channels: int
  out_channels: int
  sources: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CostModel:
  """Backbone convs in execution order and the spec whose groups switch their channels on and off."""
  convs: tuple[ConvCost, ...]
  spec: GroupSpec

  @classmethod
  def from_model(cls, model: MultiTaskNet, spec: GroupSpec, image_size: int) -> "CostModel":
    """Reads output resolutions from a shape-only forward pass at `image_size`² and sources from the backbone."""
    _, state = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False, capture_intermediates=True))
    sources, _ = model.backbone.channel_sources()
    convs = []
    for name, srcs in sources.items():
      node = state["intermediates"]["backbone"]
      for part in name.split("/"):
        node = node[part]
      _, h, w, out_channels = node["conv"]["__call__"][0].shape
      kernel = state["params"]["backbone"]
      for part in name.split("/") + ["conv", "kernel"]:
        kernel = kernel[part]
      kh, kw, in_channels, _ = kernel.shape
      convs.append(ConvCost(f"backbone/{name}", 2.0 * h * w * kh * kw, kh * kw, in_channels, out_channels,
                            tuple(f"backbone/{s}" for s in srcs)))
    return cls(tuple(convs), spec)

  @property
  def dense_flops(self) -> float:
    """FLOPs of one forward pass of the dense backbone at batch 1."""
    return float(sum(c.flops_per_pair * c.in_channels * c.out_channels for c in self.convs))

  def _alive_masks(self, params) -> dict[str, jax.Array]:
    """conv name → (O,) bool mask of its alive output channels (all alive for convs outside the spec)."""
    masks = {c.name: jnp.ones(c.out_channels, bool) for c in self.convs}
    masks.update({layer.name: alive for layer, alive in zip(self.spec.layers, self.spec.alive(params))})
    return masks

  def flops_kept(self, params) -> jax.Array:
    """Fraction (scalar in [0, 1]) of the dense backbone's FLOPs that a pruned network keeps."""
    masks = self._alive_masks(params)
    total = 0.0
    for c in self.convs:
      alive_in = c.in_channels if not c.sources else jnp.sum(
          jnp.any(jnp.stack([masks[s] for s in c.sources]), axis=0))
      total = total + c.flops_per_pair * alive_in * jnp.sum(masks[c.name])
    return total / self.dense_flops

  def channel_costs(self, kind: str = "flops") -> np.ndarray:
    """(L,) cost c_ℓ of one output channel of each spec layer, normalised to a group-weighted mean of 1.

    flops: the channel's own FLOPs plus the FLOPs of its consumers' matching input channel (a residual-stream
    channel's consumer cost is shared between its producers); params: likewise in weights; uniform: all 1.
    """
    if kind not in COST_KINDS:
      raise ValueError(f"budget.cost={kind!r}; choose one of {COST_KINDS}")
    by_name = {c.name: c for c in self.convs}
    per_pair = lambda c: c.flops_per_pair if kind == "flops" else c.weights_per_pair
    values = []
    for layer in self.spec.layers:
      if kind == "uniform":
        values.append(1.0)
        continue
      own = per_pair(by_name[layer.name]) * by_name[layer.name].in_channels
      consumers = sum(per_pair(c) * c.out_channels / len(c.sources) for c in self.convs if layer.name in c.sources)
      values.append(own + consumers)
    values = np.array(values)
    groups = np.array([layer.num_groups for layer in self.spec.layers])
    return values / (np.sum(values * groups) / np.sum(groups))
