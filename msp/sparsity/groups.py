"""Channel groups: which slices of the parameter tree form one group, derived from the tree by regex.

`out_channel` (default): for a conv kernel W of shape (kh, kw, I, O) selected by the `include` regex, group c is
W[..., c] together with entry c of the BatchNorm that follows it (`<module>/norm/scale`, `<module>/norm/bias`).
Zeroing such a group makes output channel c exactly zero after BatchNorm and a zero-preserving activation.
`in_channel` (the authors' code): group c is W[:, :, c, :]; BatchNorm entries are not grouped.

All functions are pure: they take a params pytree (nested dicts as Flax returns them) and return arrays or a new
pytree of the same structure.
"""
import dataclasses
import math
import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util

Path = tuple[str, ...]
GROUPINGS = ("out_channel", "in_channel")
DEFAULT_INCLUDE = r"^backbone/.*/conv/kernel$"


@dataclasses.dataclass(frozen=True)
class LayerGroups:
  """The groups of one sparsified conv layer. `name` is the module path, e.g. backbone/stage1_block0/conv1."""
  name: str
  kernel: Path
  coupled: tuple[Path, ...]
  grouping: str
  kernel_shape: tuple[int, int, int, int]
  weight: float

  @property
  def num_groups(self) -> int:
    return self.kernel_shape[3] if self.grouping == "out_channel" else self.kernel_shape[2]

  @property
  def group_size(self) -> int:
    """Number of scalars in one group, |g|."""
    return math.prod(self.kernel_shape) // self.num_groups + len(self.coupled)

  @property
  def kernel_reduce_axes(self) -> tuple[int, ...]:
    return (0, 1, 2) if self.grouping == "out_channel" else (0, 1, 3)


WEIGHTINGS: dict[str, Callable[[LayerGroups], float]] = {
    "sqrt_group_size": lambda layer: math.sqrt(layer.group_size),  # Yuan & Lin
    "unweighted": lambda layer: 1.0,
    "sqrt_in_channels": lambda layer: math.sqrt(layer.kernel_shape[2]),  # the authors' code
}


@dataclasses.dataclass(frozen=True)
class GroupSpec:
  """The ordered sparsified layers of a network; layer ℓ of every per-layer array (λ, Ω, stats) is `layers[ℓ]`."""
  layers: tuple[LayerGroups, ...]

  @classmethod
  def from_params(cls, params, include: str = DEFAULT_INCLUDE, grouping: str = "out_channel",
                  weighting: str = "sqrt_group_size", norm_name: str = "norm") -> "GroupSpec":
    """Finds every 4-D kernel whose '/'-joined path matches `include` and builds its groups.

    Raises ValueError when the regex matches nothing or an option is unknown.
    """
    if grouping not in GROUPINGS:
      raise ValueError(f"sparsity.grouping={grouping!r}; choose one of {GROUPINGS}")
    if weighting not in WEIGHTINGS:
      raise ValueError(f"sparsity.weighting={weighting!r}; choose one of {sorted(WEIGHTINGS)}")
    flat = traverse_util.flatten_dict(params)
    pattern = re.compile(include)
    layers = []
    for path, value in flat.items():
      if value.ndim != 4 or not pattern.search("/".join(path)):
        continue
      coupled = ()
      if grouping == "out_channel":
        norm = path[:-2] + (norm_name,)
        coupled = tuple(p for p in (norm + ("scale",), norm + ("bias",)) if p in flat)
      layer = LayerGroups(name="/".join(path[:-2]), kernel=path, coupled=coupled, grouping=grouping,
                          kernel_shape=tuple(value.shape), weight=0.0)
      layers.append(dataclasses.replace(layer, weight=WEIGHTINGS[weighting](layer)))
    if not layers:
      raise ValueError(f"sparsity.include={include!r} matches no 4-D conv kernel in the parameter tree")
    return cls(tuple(sorted(layers, key=lambda layer: _natural_key(layer.name))))

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
      sq = jnp.sum(jnp.square(flat[layer.kernel]), axis=layer.kernel_reduce_axes)
      for path in layer.coupled:
        sq = sq + jnp.square(flat[path])
      out.append(sq)
    return out

  def group_norms(self, params) -> list[jax.Array]:
    """Per layer, (G_ℓ,) l2 norms ‖θ_g‖₂; zero groups give 0 with a zero (not NaN) gradient."""
    return [safe_sqrt(sq) for sq in self.group_sqnorms(params)]

  def alive(self, params) -> list[jax.Array]:
    """Per layer, (G_ℓ,) bool: the groups that are not all zero (the channels a pruned network keeps)."""
    return [sq > 0 for sq in self.group_sqnorms(params)]

  def scale_groups(self, params, factors: Sequence[jax.Array]):
    """Returns params with every entry of group c of layer ℓ multiplied by factors[ℓ][c]; others unchanged."""
    flat = dict(traverse_util.flatten_dict(params))
    for layer, factor in zip(self.layers, factors):
      kernel = flat[layer.kernel]
      shape = (1, 1, 1, -1) if layer.grouping == "out_channel" else (1, 1, -1, 1)
      flat[layer.kernel] = kernel * factor.reshape(shape).astype(kernel.dtype)
      for path in layer.coupled:
        flat[path] = flat[path] * factor.astype(flat[path].dtype)
    return traverse_util.unflatten_dict(flat)


def _natural_key(name: str) -> list:
  """Sort key that orders stage2 before stage10 (Flax sorts parameter names as plain strings)."""
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def safe_sqrt(x: jax.Array) -> jax.Array:
  """√x for x ≥ 0 whose gradient at x = 0 is 0 instead of inf (so 0·inf never makes a NaN)."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)
