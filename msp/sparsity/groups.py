"""Channel groups: which slices of the parameter tree form one group, derived from the tree by regex.

`out_channel` (default): for a conv kernel W of shape (kh, kw, I, O) selected by the `include` regex, group c is
W[..., c] together with entry c of the BatchNorm that follows it (`<module>/norm/scale`, `<module>/norm/bias`).
Zeroing such a group makes output channel c exactly zero after BatchNorm and a zero-preserving activation.
`in_channel` (the authors' code): group c is W[:, :, c, :]; BatchNorm entries are not grouped.
`ties` merge the out-channel groups of several convs into one layer: group c is channel c of every one of them
(e.g. the convs whose outputs are summed into one residual stream, so that zeroing a group removes the channel from
the stream; `ResNet.channel_spaces`).

All functions are pure: they take a params pytree (nested dicts as Flax returns them) and return arrays or a new
pytree of the same structure.
"""
import dataclasses
import math
import re
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util

from msp.sparsity.tracing import ChannelGraph, Member

Path = tuple[str, ...]
GROUPINGS = ("out_channel", "in_channel")
DEFAULT_INCLUDE = r"^backbone/.*/conv/kernel$"


@dataclasses.dataclass(frozen=True)
class LayerGroups:
  """The groups of one sparsified layer: one conv kernel, or (tied) several whose output channel c forms one group.

  `name` is the module path, e.g. backbone/stage1_block0/conv1 (a tie's name is the caller's); `members` the module
  paths of its convs (or dense layers), `kernels` their kernel paths and `kernel_shapes` their shapes ((kh, kw, I, O)
  or (I, O): the output axis last), in that order; `coupled` the 1-D entries grouped with them (BatchNorm scale and
  bias, a layer's bias).
  """
  name: str
  members: tuple[str, ...]
  kernels: tuple[Path, ...]
  coupled: tuple[Path, ...]
  grouping: str
  kernel_shapes: tuple[tuple[int, ...], ...]
  weight: float

  @property
  def num_groups(self) -> int:
    return self.kernel_shapes[0][-1] if self.grouping == "out_channel" else self.kernel_shapes[0][-2]

  @property
  def group_size(self) -> int:
    """Number of scalars in one group, |g|."""
    return sum(math.prod(shape) for shape in self.kernel_shapes) // self.num_groups + len(self.coupled)

  @property
  def in_channels(self) -> int:
    """Input channels of its kernels together."""
    return sum(shape[-2] for shape in self.kernel_shapes)

  def reduce_axes(self, ndim: int) -> tuple[int, ...]:
    """The axes of an `ndim`-D kernel that one group spans: all but the output (or input) axis."""
    kept = ndim - 1 if self.grouping == "out_channel" else ndim - 2
    return tuple(a for a in range(ndim) if a != kept)


@dataclasses.dataclass(frozen=True)
class GroupSpec:
  """The ordered sparsified layers of a network; layer ℓ of every per-layer array (λ, Ω, stats) is `layers[ℓ]`.

  relative: the prox's thresholds are in units of each layer's mean alive group norm (`prox_thresholds`), so that
  one λ thins every layer by the same fraction of its own scale, as globally normalised magnitude pruning ranks
  channels; the penalty Ω keeps the static weights.
  """
  layers: tuple[LayerGroups, ...]
  relative: bool = False

  @classmethod
  def from_params(cls, params, include: str = DEFAULT_INCLUDE, grouping: str = "out_channel",
                  norm_name: str = "norm",
                  ties: Mapping[str, Sequence[str]] | None = None, relative: bool = False) -> "GroupSpec":
    """Finds every 4-D kernel whose '/'-joined path matches `include` and builds its groups.

    ties: {layer name: module paths of sparsified convs with equal output channels}; each becomes one layer (only
    with `out_channel`), in place of its members. relative: the spec's `relative` (prox thresholds in units of each
    layer's mean alive group norm). Raises ValueError when the regex matches nothing, an option is
    unknown, a tie does not fit, or two kernels name one layer (as Flax's default names make them): then trace the
    network (`from_graph`). The rule itself is trusted: a kernel whose norm is not at `<module>/norm_name` is
    coupled to whatever is there.
    """
    if grouping not in GROUPINGS:
      raise ValueError(f"sparsity.grouping={grouping!r}; choose one of {GROUPINGS}")
    flat = traverse_util.flatten_dict(params)
    pattern = re.compile(include)
    convs = {}
    for path, value in flat.items():
      if value.ndim != 4 or not pattern.search("/".join(path)):
        continue
      coupled = ()
      if grouping == "out_channel":
        norm = path[:-2] + (norm_name,)
        coupled = tuple(p for p in (norm + ("scale",), norm + ("bias",)) if p in flat)
      name = "/".join(path[:-2])
      if name in convs:  # (and would share one norm)
        raise ValueError(f"sparsity.include={include!r}: {'/'.join(convs[name].kernels[0])} and {'/'.join(path)} "
                         f"name the same layer: grouping by name expects <module>/conv/kernel with its norm at "
                         f"<module>/{norm_name}; find this network's groups by tracing it instead "
                         f"(GroupSpec.from_graph)")
      convs[name] = LayerGroups(name=name, members=(name,), kernels=(path,), coupled=coupled, grouping=grouping,
                                kernel_shapes=(tuple(value.shape),), weight=0.0)
    if not convs:
      raise ValueError(f"sparsity.include={include!r} matches no 4-D conv kernel in the parameter tree")
    for name, members in (ties or {}).items():
      convs = {**{k: v for k, v in convs.items() if k not in members}, name: _tie(name, members, convs)}
    # each group's penalty weight is √(its size) (Yuan & Lin), so that Ω does not favour small groups
    layers = [dataclasses.replace(layer, weight=math.sqrt(layer.group_size)) for layer in convs.values()]
    return cls(tuple(sorted(layers, key=lambda layer: _natural_key(layer.name))), relative=relative)

  @classmethod
  def from_graph(cls, graph: ChannelGraph, include: str = ".*", tie: bool = True,
                 relative: bool = False) -> "GroupSpec":
    """The groups of the channel spaces that `msp.sparsity.tracing.trace_channels` found, for every space whose
    producers' paths (in the params tree, e.g. "backbone/stage1_block0/conv1/conv/kernel") match `include`.

    tie: one layer per space, group c = channel c of all its producers and coupled entries (zeroing it removes the
    channel); else one layer per producer with the coupled entries that belong to it (a residual stream's channel
    then stays alive until every producer zeroes it). Layers are in execution order, named after their first
    producer's module (with "+N" for N more producers). Raises ValueError, naming the parameters, when `include`
    matches a refused space, only some producers of a space, or nothing; or a space's channel axes are not the
    kernels' last axis and 1-D entries (what the prox and the export slice).
    """
    pattern = re.compile(include)
    matches = lambda names: [bool(pattern.search(name.removeprefix("params/"))) for name in names]
    refused = [r.message for r in graph.refused if any(matches(r.producers))]
    if refused:
      raise ValueError(f"sparsity.include={include!r} selects channels that cannot be removed: " + "; ".join(refused)
                       + ". Leave those parameters out of sparsity.include")
    layers = []
    for space in graph.spaces:
      names = [m.name for m in space.producers]
      matched = matches(names)
      if not any(matched):
        continue
      if not all(matched):
        raise ValueError(f"sparsity.include={include!r} matches {[n for n, m in zip(names, matched) if m]} but not "
                         f"{[n for n, m in zip(names, matched) if not m]}, which write the same channels: include "
                         f"all of them or none")
      for member in (*space.producers, *space.coupled):
        expected = len(member.shape) - 1 if member in space.producers else 0
        if member.axis != expected or not member.identity or member in space.coupled and len(member.shape) != 1:
          raise ValueError(f"{member.name}: its channels run along axis {member.axis} of shape {member.shape} "
                           f"{'in another order' if member.axis == expected else ''}; msp groups kernels' last "
                           f"axes and 1-D entries")
      if tie or len(space.producers) == 1:
        layers.append(_layer(space.producers, space.coupled, 0.0))
      else:
        for i, producer in enumerate(space.producers):
          own = [c for c, owner in zip(space.coupled, space.owner) if owner == i or (
              owner == -1 and i == len(space.producers) - 1)]
          layers.append(_layer((producer,), own, 0.0))
    if not layers:
      raise ValueError(f"sparsity.include={include!r} matches no producer of a channel space")
    order = {c.kernel[1:]: i for i, c in enumerate(graph.contractions)}  # execution order
    layers = sorted(layers, key=lambda layer: order.get(layer.kernels[0], len(order)))
    layers = [dataclasses.replace(layer, weight=math.sqrt(layer.group_size)) for layer in layers]
    return cls(tuple(layers), relative=relative)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(layer.name for layer in self.layers)

  @property
  def num_layers(self) -> int:
    return len(self.layers)

  @property
  def weights(self) -> jax.Array:
    """(L,) per-layer group weight w_ℓ (e.g. √|g|)."""
    return jnp.asarray([layer.weight for layer in self.layers])

  def group_sqnorms(self, params) -> list[jax.Array]:
    """Per layer, (G_ℓ,) sums of squares ‖θ_g‖² of its groups."""
    flat = traverse_util.flatten_dict(params)
    out = []
    for layer in self.layers:
      sq = sum(jnp.sum(jnp.square(flat[kernel]), axis=layer.reduce_axes(flat[kernel].ndim)) for kernel in layer.kernels)
      for path in layer.coupled:
        sq = sq + jnp.square(flat[path])
      out.append(sq)
    return out

  def group_norms(self, params) -> list[jax.Array]:
    """Per layer, (G_ℓ,) l2 norms ‖θ_g‖₂; zero groups give 0 with a zero (not NaN) gradient."""
    return [safe_sqrt(sq) for sq in self.group_sqnorms(params)]

  def prox_thresholds(self, norms: Sequence[jax.Array], taus: jax.Array) -> list[jax.Array]:
    """Per layer, the scalar threshold of its groups' prox: τ_ℓ w_ℓ, times (with `relative`) the layer's mean alive
    group norm m_ℓ = Σ_c ‖θ_c‖ / #{c: ‖θ_c‖ > 0} (a constant for gradients: λ alone moves the threshold).

    norms: per layer (G_ℓ,) group norms; taus: (L,) τ_ℓ ≥ 0 (step size × λ_ℓ).
    """
    thresholds = [taus[i] * layer.weight for i, layer in enumerate(self.layers)]
    if not self.relative:
      return thresholds
    means = [jax.lax.stop_gradient(jnp.sum(n) / jnp.maximum(jnp.sum(n > 0), 1)) for n in norms]
    return [t * m for t, m in zip(thresholds, means)]

  def alive(self, params) -> list[jax.Array]:
    """Per layer, (G_ℓ,) bool: the groups that are not all zero (the channels a pruned network keeps)."""
    return [sq > 0 for sq in self.group_sqnorms(params)]

  def scale_groups(self, params, factors: Sequence[jax.Array]):
    """Returns params with every entry of group c of layer ℓ multiplied by factors[ℓ][c]; others unchanged."""
    flat = dict(traverse_util.flatten_dict(params))
    for layer, factor in zip(self.layers, factors):
      for kernel in layer.kernels:
        ndim = flat[kernel].ndim
        shape = [1] * ndim
        shape[ndim - 1 if layer.grouping == "out_channel" else ndim - 2] = -1
        flat[kernel] = flat[kernel] * factor.reshape(shape).astype(flat[kernel].dtype)
      for path in layer.coupled:
        flat[path] = flat[path] * factor.astype(flat[path].dtype)
    return traverse_util.unflatten_dict(flat)


def _tie(name: str, members: Sequence[str], convs: Mapping[str, LayerGroups]) -> LayerGroups:
  """One layer of the out-channel groups of the convs `members` (module paths, keys of `convs`), named `name`."""
  missing = [m for m in members if m not in convs]
  if missing or not members:
    raise ValueError(f"sparsity tie {name!r}: " + (f"{missing} are not sparsified convs" if missing else "no convs"))
  layers = [convs[m] for m in members]
  if layers[0].grouping != "out_channel":
    raise ValueError(f"sparsity tie {name!r}: ties need grouping 'out_channel', not {layers[0].grouping!r}")
  if len({layer.num_groups for layer in layers}) > 1:
    raise ValueError(f"sparsity tie {name!r}: its convs have different output channels "
                     f"{[layer.num_groups for layer in layers]}")
  gather = lambda field: tuple(item for layer in layers for item in getattr(layer, field))
  return LayerGroups(name=name, members=tuple(members), kernels=gather("kernels"), coupled=gather("coupled"),
                     grouping="out_channel", kernel_shapes=gather("kernel_shapes"), weight=0.0)


def _layer(producers: Sequence["Member"], coupled: Sequence["Member"], weight: float) -> LayerGroups:
  """One out-channel layer of traced members (paths start with the collection, "params")."""
  modules = ["/".join(m.path[1:-1]) for m in producers]
  name = modules[0] + (f"+{len(modules) - 1}" if len(modules) > 1 else "")
  return LayerGroups(name=name, members=tuple(modules), kernels=tuple(m.path[1:] for m in producers),
                     coupled=tuple(m.path[1:] for m in coupled), grouping="out_channel",
                     kernel_shapes=tuple(m.shape for m in producers), weight=weight)


def _natural_key(name: str) -> list:
  """Sort key that orders stage2 before stage10 (Flax sorts parameter names as plain strings)."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def safe_sqrt(x: jax.Array) -> jax.Array:
  """√x for x ≥ 0 whose gradient at x = 0 is 0 instead of inf (so 0·inf never makes a NaN)."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)
