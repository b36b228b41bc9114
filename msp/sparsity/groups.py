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

Path = tuple[str, ...]
GROUPINGS = ("out_channel", "in_channel")
DEFAULT_INCLUDE = r"^backbone/.*/conv/kernel$"


@dataclasses.dataclass(frozen=True)
class LayerGroups:
  """The groups of one sparsified layer: one conv kernel, or (tied) several whose output channel c forms one group.

  `name` is the module path, e.g. backbone/stage1_block0/conv1 (a tie's name is the caller's); `members` the module
  paths of its convs, `kernels` their kernel paths and `kernel_shapes` their (kh, kw, I, O) shapes, in that order;
  `coupled` the BatchNorm scale and bias paths grouped with them.
  """
  name: str
  members: tuple[str, ...]
  kernels: tuple[Path, ...]
  coupled: tuple[Path, ...]
  grouping: str
  kernel_shapes: tuple[tuple[int, int, int, int], ...]
  weight: float

  @property
  def num_groups(self) -> int:
    return self.kernel_shapes[0][3] if self.grouping == "out_channel" else self.kernel_shapes[0][2]

  @property
  def group_size(self) -> int:
    """Number of scalars in one group, |g|."""
    return sum(math.prod(shape) for shape in self.kernel_shapes) // self.num_groups + len(self.coupled)

  @property
  def in_channels(self) -> int:
    """Input channels of its kernels together."""
    return sum(shape[2] for shape in self.kernel_shapes)

  @property
  def kernel_reduce_axes(self) -> tuple[int, ...]:
    return (0, 1, 2) if self.grouping == "out_channel" else (0, 1, 3)


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
    unknown or a tie does not fit.
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
      convs[name] = LayerGroups(name=name, members=(name,), kernels=(path,), coupled=coupled, grouping=grouping,
                                kernel_shapes=(tuple(value.shape),), weight=0.0)
    if not convs:
      raise ValueError(f"sparsity.include={include!r} matches no 4-D conv kernel in the parameter tree")
    for name, members in (ties or {}).items():
      convs = {**{k: v for k, v in convs.items() if k not in members}, name: _tie(name, members, convs)}
    # each group's penalty weight is √(its size) (Yuan & Lin), so that Ω does not favour small groups
    layers = [dataclasses.replace(layer, weight=math.sqrt(layer.group_size)) for layer in convs.values()]
    return cls(tuple(sorted(layers, key=lambda layer: _natural_key(layer.name))), relative=relative)

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
      sq = sum(jnp.sum(jnp.square(flat[kernel]), axis=layer.kernel_reduce_axes) for kernel in layer.kernels)
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
      shape = (1, 1, 1, -1) if layer.grouping == "out_channel" else (1, 1, -1, 1)
      for kernel in layer.kernels:
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


def _natural_key(name: str) -> list:
  """Sort key that orders stage2 before stage10 (Flax sorts parameter names as plain strings)."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def safe_sqrt(x: jax.Array) -> jax.Array:
  """√x for x ≥ 0 whose gradient at x = 0 is 0 instead of inf (so 0·inf never makes a NaN)."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)
