"""What the network costs: FLOPs and parameters as functions of which backbone channels are alive.

A conv of kernel (kh, kw, I, O) with output (H, W) costs 2·H·W·kh·kw·I·O FLOPs (multiply and add) and kh·kw·I·O
weights (+ 2·O BatchNorm entries in the backbone); a dense layer (I, O) is the case H = W = kh = kw = 1. Its alive
input channels are the channels alive in any of the convs that feed it (`ResNet.channel_sources`; the image's
channels are always alive), its alive output channels its non-zero groups. Only convs and dense layers are counted
(not BatchNorm, activations, pooling or resizing), for one image (batch 1).
The budget's fractions (`flops_kept`, `channel_costs`) are of the backbone; `counts` adds the heads, whose layers
that read the backbone's features (`Head.feature_layers`) lose the input channels the backbone loses.
"""
import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msp.models import MultiTaskNet, ResNet
from msp.models.heads import HEADS
from msp.sparsity.groups import GroupSpec

COST_KINDS = ("flops", "params", "uniform")


@dataclasses.dataclass(frozen=True)
class ConvCost:
  """One conv (or dense layer): FLOPs and weights per (input channel, output channel) pair, sources, channel
  counts."""
  name: str
  flops_per_pair: float
  weights_per_pair: int
  in_channels: int
  out_channels: int
  sources: tuple[str, ...]


class Count(NamedTuple):
  """Parameters and FLOPs (one forward pass at batch 1) of a layer or a part of the network."""
  params: float
  flops: float


def _layer_cost(state: dict, name: str, path: tuple[str, ...], sources: tuple[str, ...]) -> ConvCost:
  """ConvCost `name` of the conv or dense layer at module `path`, from a shape-only forward pass's variables and
  intermediates (its kernel and its output)."""
  kernel, output = state["params"], state["intermediates"]
  for part in path:
    kernel, output = kernel[part], output[part]
  kernel, output = kernel["kernel"].shape, output["__call__"][0].shape
  pair_weights = int(np.prod(kernel[:-2]))
  return ConvCost(name, float(2 * np.prod(output[1:-1]) * pair_weights), pair_weights, kernel[-2], kernel[-1], sources)


def _kernel_modules(tree: dict, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
  """Paths of the modules under `tree` (a params subtree at `prefix`) that hold a `kernel`, in tree order."""
  if "kernel" in tree:
    return [prefix]
  return [path for name, child in tree.items() if isinstance(child, dict)
          for path in _kernel_modules(child, (*prefix, name))]


def _backbone_names(names) -> tuple[str, ...]:
  """Conv paths inside the backbone → the cost model's names of those convs ("backbone/<path>")."""
  return tuple(f"backbone/{name}" for name in names)


def _backbone_convs(backbone: ResNet, state: dict, prefix: tuple[str, ...]) -> tuple[ConvCost, ...]:
  """ConvCost of every conv of `backbone` in execution order (named "backbone/<conv path>", sources likewise), from a
  shape-only forward pass's variables and intermediates in which the backbone's modules sit under `prefix`."""
  sources, _ = backbone.channel_sources()
  return tuple(_layer_cost(state, f"backbone/{name}", (*prefix, *name.split("/"), "conv"), _backbone_names(srcs))
               for name, srcs in sources.items())


def _dense_flops(convs: tuple[ConvCost, ...]) -> float:
  """FLOPs of `convs` with every channel alive."""
  return float(sum(c.flops_per_pair * c.in_channels * c.out_channels for c in convs))


def backbone_flops(backbone: ResNet, image_size: int) -> float:
  """FLOPs of one forward pass of the dense `backbone` on one image_size² RGB image (batch 1), counted as
  `CostModel.dense_flops` counts them (2 per multiply-add of every conv; BatchNorm, activations and pooling not
  counted). Shape-only: nothing is computed on arrays."""
  _, state = jax.eval_shape(lambda: backbone.init_with_output(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False, capture_intermediates=True))
  return _dense_flops(_backbone_convs(backbone, state, ()))


@dataclasses.dataclass(frozen=True)
class CostModel:
  """Backbone convs in execution order, the spec whose groups switch their channels on and off, and the heads'
  conv and dense layers (`heads`, sources () or the backbone's output producers) with each head's dense parameter
  count (`head_params`, every leaf: kernels, biases, norms)."""
  convs: tuple[ConvCost, ...]
  spec: GroupSpec
  heads: tuple[ConvCost, ...] = ()
  head_params: tuple[tuple[str, int], ...] = ()

  @classmethod
  def from_model(cls, model: MultiTaskNet, spec: GroupSpec, image_size: int) -> "CostModel":
    """Reads output resolutions from a shape-only forward pass at `image_size`² and sources from the backbone."""
    _, state = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False, capture_intermediates=True))
    _, features = model.backbone.channel_sources()
    convs = _backbone_convs(model.backbone, state, ("backbone",))
    heads, head_params = [], []
    for task, kind, _ in model.heads:
      tree = state["params"][f"head_{task}"]
      head_params.append((f"head_{task}", sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))))
      heads += [_layer_cost(state, "/".join(path), path,
                            _backbone_names(features) if path[1:] in [(f,) for f in HEADS[kind].feature_layers] else ())
                for path in _kernel_modules(tree, (f"head_{task}",))]
    return cls(tuple(convs), spec, tuple(heads), tuple(head_params))

  @property
  def dense_flops(self) -> float:
    """FLOPs of one forward pass of the dense backbone at batch 1."""
    return _dense_flops(self.convs)

  def _alive_masks(self, alive: Sequence[jax.Array] | None) -> dict[str, jax.Array]:
    """conv name → (O,) bool mask of its alive output channels: `alive` (per spec layer) for the spec's convs, all
    for the others, and for every conv when `alive` is None (the dense network)."""
    masks = {c.name: jnp.ones(c.out_channels, bool) for c in self.convs}
    if alive is not None:
      masks.update({conv: jnp.asarray(a, bool) for layer, a in zip(self.spec.layers, alive) for conv in layer.members})
    return masks

  @staticmethod
  def _alive_inputs(c: ConvCost, masks: dict[str, jax.Array]) -> int | jax.Array:
    """How many of conv c's input channels are alive (all when it reads the image or a head's inner layer)."""
    if not c.sources:
      return c.in_channels
    return jnp.sum(jnp.any(jnp.stack([masks[s] for s in c.sources]), axis=0))

  def flops_kept(self, params) -> jax.Array:
    """Fraction (scalar in [0, 1]) of the dense backbone's FLOPs that a pruned network keeps."""
    return self.flops_kept_by_alive(self.spec.alive(params))

  def flops_kept_by_alive(self, alive: Sequence[jax.Array]) -> jax.Array:
    """`flops_kept` of the network whose spec layers keep the channels `alive` (per layer, (G_ℓ,) bool)."""
    masks = self._alive_masks(alive)
    total = 0.0
    for c in self.convs:
      total = total + c.flops_per_pair * self._alive_inputs(c, masks) * jnp.sum(masks[c.name])
    return total / self.dense_flops

  def counts(self, params=None) -> dict[str, Count]:
    """Count of every backbone conv (by name, e.g. "backbone/stage1_block0/conv1") and every head (by module, e.g.
    "head_depth") of the network whose dead channels are the zero groups of `params` (None: the dense network).

    A backbone conv has weights·(alive in)·(alive out) + 2·(alive out) BatchNorm parameters; a head has its dense
    parameter count less the feature layers' weights of dead input channels. Host-side; sum for totals.
    """
    masks = self._alive_masks(None if params is None else self.spec.alive(params))
    result = {}
    for c in self.convs:
      alive_in, alive_out = float(self._alive_inputs(c, masks)), float(jnp.sum(masks[c.name]))
      result[c.name] = Count(c.weights_per_pair * alive_in * alive_out + 2 * alive_out,
                             c.flops_per_pair * alive_in * alive_out)
    for head, dense_params in self.head_params:
      layers = [c for c in self.heads if c.name.split("/")[0] == head]
      alive_in = [float(self._alive_inputs(c, masks)) for c in layers]
      dead_weights = sum(c.weights_per_pair * (c.in_channels - a) * c.out_channels for c, a in zip(layers, alive_in))
      result[head] = Count(dense_params - dead_weights,
                           sum(c.flops_per_pair * a * c.out_channels for c, a in zip(layers, alive_in)))
    return result

  def channel_costs(self, kind: str = "flops") -> np.ndarray:
    """(L,) cost c_ℓ of one output channel of each spec layer, normalised to a group-weighted mean of 1.

    flops: the channel's own FLOPs (in every conv of a tied layer) plus the FLOPs of its consumers' matching input
    channel (shared between a residual stream's producers, so a layer tying them all gets all of it); params:
    likewise in weights; uniform: all 1.
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
      own = sum(per_pair(by_name[conv]) * by_name[conv].in_channels for conv in layer.members)
      shares = [(c, sum(conv in c.sources for conv in layer.members) / len(c.sources)) for c in self.convs if c.sources]
      consumers = sum(per_pair(c) * c.out_channels * share for c, share in shares)
      values.append(own + consumers)
    values = np.array(values)
    groups = np.array([layer.num_groups for layer in self.spec.layers])
    return values / (np.sum(values * groups) / np.sum(groups))
