"""What the network costs: FLOPs and parameters as functions of which channels are alive, read from a traced forward
pass (`msp.sparsity.tracing`), so that any network that traces has them.

A conv or dense layer costs `flops_per_pair` FLOPs and `weights_per_pair` weights per (input channel, output channel)
pair: 2·H·W·kh·kw and kh·kw for a conv with output H×W, 2 and 1 for a dense layer, for one image (batch 1). Its alive
output channels are its own groups' (the spec layer whose kernel it is; all for any other kernel); an input channel is
alive when a spec layer that wrote it upstream keeps it (of a residual stream read mid-stage: the producers before
that point; a channel no spec layer writes, e.g. the image's, always is). Only convs and dense layers cost FLOPs (not normalisation,
activations, pooling or resizing). The budget's fractions (`flops_kept`, `channel_costs`) are of the spec's kernels
(the backbone under msp's default `sparsity.include`); `counts` covers every parameter.
"""
import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from msp.sparsity.groups import GroupSpec
from msp.sparsity.tracing import ChannelGraph, trace_channels

COST_KINDS = ("flops", "params", "uniform")
Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """One conv or dense layer: its kernel's path in the params tree, FLOPs and weights per (input channel, output
  channel) pair, and its input channels as a (I, W) table of indices into the spec's concatenated per-layer alive
  masks: input channel i is alive when any of row i is (a row of -1 only: a channel no spec layer writes, always
  alive)."""
  kernel: Path
  flops_per_pair: float
  weights_per_pair: int
  inputs: np.ndarray
  out_channels: int

  @property
  def name(self) -> str:
    """The kernel's module path, e.g. "backbone/stage1_block0/conv1/conv"."""
    return "/".join(self.kernel[:-1])

  @property
  def in_channels(self) -> int:
    return len(self.inputs)


class Count(NamedTuple):
  """Parameters and FLOPs (one forward pass at batch 1) of a layer or a part of the network."""
  params: float
  flops: float


@dataclasses.dataclass(frozen=True)
class _Entry:
  """A parameter leaf for `counts`: its path, shape, the key it is counted under, and per axis either the spec layer
  whose groups are its positions (an int: a spec kernel's output axis, a coupled entry), a table like
  `LayerCost.inputs` (the channels it reads), or None (an axis that loses nothing)."""
  path: Path
  shape: tuple[int, ...]
  key: str
  axes: tuple[int | np.ndarray | None, ...]


def _dense_flops(layers: Sequence[LayerCost]) -> float:
  """FLOPs of `layers` with every channel alive."""
  return float(sum(c.flops_per_pair * c.in_channels * c.out_channels for c in layers))


def backbone_flops(backbone, image_size: int) -> float:
  """FLOPs of one forward pass of the dense `backbone` (a Flax module called as `backbone(x, train=False)`) on one
  image_size² RGB image (batch 1), counted as `CostModel.dense_flops` counts them (2 per multiply-add of every conv
  and dense layer). Shape-only: nothing is computed on arrays."""
  graph, _ = _trace(backbone, image_size)
  return float(sum(c.flops_per_pair * len(c.inputs) * len(c.outputs) for c in graph.contractions))


def _trace(model, image_size: int) -> tuple[ChannelGraph, dict]:
  """(graph, params shapes) of `model` called as `model(x, train=False)` on one image_size² RGB image."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(images.shape), train=False))
  return trace_channels(lambda v, x: model.apply(v, x, train=False), variables, images), variables["params"]


def _table(rows: Sequence[Sequence[int]]) -> np.ndarray:
  """(len(rows), max row length ≥ 1) int array of the rows, padded with -1."""
  width = max([1, *map(len, rows)])
  return np.array([[*row, *[-1] * (width - len(row))] for row in rows], dtype=np.int64).reshape(len(rows), width)


@dataclasses.dataclass(frozen=True)
class CostModel:
  """Every conv and dense layer of a network (`layers`, execution order), the spec whose groups switch channels on
  and off, each layer's spec layer (`own`: its output channels are that layer's groups; None: all alive), the layers
  the budget's fractions are of (`counted`: the spec's kernels) and every parameter leaf (`entries`, for `counts`)."""
  layers: tuple[LayerCost, ...]
  spec: GroupSpec
  own: tuple[int | None, ...]
  counted: tuple[int, ...]
  entries: tuple[_Entry, ...]

  @classmethod
  def from_model(cls, model, spec: GroupSpec, image_size: int) -> "CostModel":
    """The costs of the Flax `model` (called as `model(x, train=False)`) on image_size² RGB images, with the channels
    that `spec`'s groups switch, from a shape-only trace."""
    return cls.from_graph(*_trace(model, image_size), spec=spec)

  @classmethod
  def from_graph(cls, graph: ChannelGraph, params, spec: GroupSpec) -> "CostModel":
    """The costs of a traced network (`trace_channels` at batch 1) whose sparsified layers are `spec`'s (each of its
    kernels a producer of a traced space; channel c of the space is its group c);
    `params` gives every parameter's shape. A layer's input channel is alive when a spec layer that wrote it
    upstream of the layer keeps it (`Contraction.writers`). Parameters are counted under the spec member name of
    the kernel they belong to (the kernel and its coupled entries), the others under their top-level module."""
    layer_of = {kernel: (i, member) for i, layer in enumerate(spec.layers)
                for kernel, member in zip(layer.kernels, layer.members)}
    offsets = np.cumsum([0] + [layer.num_groups for layer in spec.layers])
    producers: dict[int, dict[Path, int]] = {}  # sparsified space → its producers' kernel paths → spec layer
    owned: dict[Path, tuple[int, str]] = {}  # coupled entry → (spec layer, member name) it belongs to
    for s, space in enumerate(graph.spaces):
      found = [layer_of.get(m.path[1:]) for m in space.producers]
      if not any(found):
        continue
      if not all(found):
        raise ValueError(f"the spec sparsifies only some producers of {[m.name for m in space.producers]}")
      producers[s] = {m.path[1:]: i for m, (i, _) in zip(space.producers, found)}
      for member, owner in zip(space.coupled, space.owner):
        owned[member.path[1:]] = found[owner if owner >= 0 else -1]

    def rows(carried: np.ndarray, writers: Sequence[Path] | None) -> np.ndarray:
      out = []
      for s, c in carried.tolist():
        if s not in producers:
          out.append(())
          continue
        upstream = {producers[s][w] for w in writers or () if w in producers[s]} or set(producers[s].values())
        out.append(tuple(int(offsets[i]) + c for i in sorted(upstream)))
      return _table(out)

    flat_params = traverse_util.flatten_dict(params)
    layers, tables = [], {}
    for c in graph.contractions:
      kernel = c.kernel[1:]
      tables[kernel] = rows(c.inputs, [w[1:] for w in c.writers])
      layers.append(LayerCost(kernel, c.flops_per_pair, int(np.prod(flat_params[kernel].shape[:-2])), tables[kernel],
                              len(c.outputs)))
    own = tuple(layer_of[c.kernel][0] if c.kernel in layer_of else None for c in layers)
    counted = tuple(i for i, c in enumerate(layers) if c.kernel in layer_of)

    axes_of: dict[Path, dict[int, int | np.ndarray]] = {}
    for s, space in enumerate(graph.spaces):
      if s not in producers:
        continue
      for member in space.consumers:
        reads = member.path[1:]
        axes_of.setdefault(reads, {})[member.axis] = tables.get(reads) if (
            reads in tables and member.axis == len(member.shape) - 2) else rows(
                np.stack([np.where(member.channels >= 0, s, -1), member.channels], 1), None)
      for member in (*space.producers, *space.coupled):
        path = member.path[1:]
        axes_of.setdefault(path, {})[member.axis] = (layer_of.get(path) or owned[path])[0]
    entries = []
    for path, leaf in flat_params.items():
      key = (layer_of.get(path) or owned.get(path) or (None, path[0]))[1]
      entries.append(_Entry(path, tuple(leaf.shape), key,
                            tuple(axes_of.get(path, {}).get(a) for a in range(len(leaf.shape)))))
    key_of = {e.path: e.key for e in entries}
    first = {}  # key → its first layer in execution order, so that `counts` lists parts as the network runs
    for i, layer in enumerate(layers):
      first.setdefault(key_of[layer.kernel], i)
    entries.sort(key=lambda e: first.get(e.key, len(layers)))
    return cls(tuple(layers), spec, own, counted, tuple(entries))

  @property
  def dense_flops(self) -> float:
    """FLOPs of one forward pass of the dense network's counted layers (the backbone) at batch 1."""
    return _dense_flops([self.layers[i] for i in self.counted])

  @staticmethod
  def _alive_rows(table: np.ndarray, flat: jax.Array | None) -> int | jax.Array:
    """How many rows of `table` (see `LayerCost.inputs`) are alive in the concatenated masks `flat` (None: all)."""
    if flat is None:
      return len(table)
    fixed = int(np.sum(np.all(table < 0, axis=1)))
    padded = jnp.concatenate([flat, jnp.zeros(1, bool)])
    return fixed + jnp.sum(jnp.any(padded[table], axis=1))

  def _layer_flops(self, i: int, alive, flat) -> jax.Array | float:
    layer = self.layers[i]
    out = layer.out_channels if alive is None or self.own[i] is None else jnp.sum(jnp.asarray(alive[self.own[i]]))
    return layer.flops_per_pair * self._alive_rows(layer.inputs, flat) * out

  @staticmethod
  def _flat(alive: Sequence[jax.Array] | None) -> jax.Array | None:
    return None if alive is None else jnp.concatenate([jnp.asarray(a, bool) for a in alive])

  def flops_kept(self, params) -> jax.Array:
    """Fraction (scalar in [0, 1]) of the dense backbone's FLOPs that a pruned network keeps."""
    return self.flops_kept_by_alive(self.spec.alive(params))

  def flops_kept_by_alive(self, alive: Sequence[jax.Array]) -> jax.Array:
    """`flops_kept` of the network whose spec layers keep the channels `alive` (per layer, (G_ℓ,) bool)."""
    flat = self._flat(alive)
    return sum(self._layer_flops(i, alive, flat) for i in self.counted) / self.dense_flops

  def counts(self, params=None) -> dict[str, Count]:
    """Count of the network whose dead channels are the zero groups of `params` (None: the dense network), by spec
    member (its kernel and coupled entries, e.g. "backbone/stage1_block0/conv1") and by top-level module for every
    other parameter (e.g. "head_depth"). A leaf keeps the entries of its alive channels along each channel axis; a
    layer's FLOPs are its pairs of alive inputs and outputs. Host-side; sum for totals."""
    alive = None if params is None else [np.asarray(a) for a in self.spec.alive(params)]
    flat = self._flat(alive)
    result: dict[str, list[float]] = {}
    for entry in self.entries:
      kept = 1.0
      for size, axis in zip(entry.shape, entry.axes):
        if alive is None or axis is None:
          kept *= size
        elif isinstance(axis, int):
          kept *= float(np.sum(alive[axis]))
        else:
          kept *= float(self._alive_rows(axis, flat))
      result.setdefault(entry.key, [0.0, 0.0])[0] += kept
    key_of = {entry.path: entry.key for entry in self.entries}
    for i, layer in enumerate(self.layers):
      result[key_of[layer.kernel]][1] += float(self._layer_flops(i, alive, flat))
    return {key: Count(*values) for key, values in result.items()}

  def channel_costs(self, kind: str = "flops") -> np.ndarray:
    """(L,) cost c_ℓ of one output channel of each spec layer, normalised to a group-weighted mean of 1.

    flops: the channel's own FLOPs (in every kernel of a tied layer) plus the FLOPs of the counted layers that read
    it (shared between the layers that write it, so a layer tying a residual stream's producers gets all of it);
    params: likewise in weights; uniform: all 1.
    """
    if kind not in COST_KINDS:
      raise ValueError(f"budget.cost={kind!r}; choose one of {COST_KINDS}")
    groups = np.array([layer.num_groups for layer in self.spec.layers])
    if kind == "uniform":
      return np.ones(len(groups))
    offsets = np.cumsum([0, *groups])
    layer_at = lambda index: int(np.searchsorted(offsets, index, side="right")) - 1
    per_pair = lambda c: c.flops_per_pair if kind == "flops" else c.weights_per_pair
    values = np.zeros(len(groups))
    for i, own in enumerate(self.own):
      if own is not None:
        values[own] += per_pair(self.layers[i]) * self.layers[i].in_channels
    for i in self.counted:
      layer = self.layers[i]
      for row in layer.inputs.tolist():
        writers = {layer_at(index) for index in row if index >= 0}
        for writer in writers:
          values[writer] += per_pair(layer) * layer.out_channels / len(writers) / groups[writer]
    return values / (np.sum(values * groups) / np.sum(groups))
