"""Configurable ResNet backbone (Flax Linen): plain, basic or bottleneck blocks, depths, widths, strides, dilations.

Parameter paths (what sparsity regexes match): `stage0_conv{i}/...` (the stem), `stage{s}_block{b}/conv{i}/...` and
`stage{s}_block{b}/shortcut/...`, each a `ConvNorm` with `conv/kernel` and `norm/{scale,bias}`.
`ResNet.conv_widths` overrides the output channels of single convs (what `msp.export` gives a pruned network); the
parameter paths and the choice of shortcuts stay those of the dense network.
"""
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from msp.models.layers import ConvNorm, get_activation

STEMS = ("simple", "deep", "torchvision")


class Block(nn.Module):
  """Fields shared by every block kind. Input (B, H, W, C_in) → (B, H/strides, W/strides, width·expansion)."""
  width: int
  strides: int = 1
  dilation: int = 1
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32
  projection: bool | None = None  # a 1×1 ConvNorm shortcut; None: when the stride or the channel count changes
  conv_widths: tuple[tuple[str, int], ...] = ()  # (conv name in the block, output channels) overriding the widths
  expansion = 1
  residual_connection = True
  branch: ClassVar[tuple[str, ...]] = ()  # the residual branch's convs in order, each fed by the previous one

  def conv(self, features: int, kernel_size: int, strides: int, dilation: int, activate: bool, name: str):
    return ConvNorm(dict(self.conv_widths).get(name, features), kernel_size, strides, dilation,
                    self.activation if activate else None, dtype=self.dtype, name=name)

  def has_shortcut(self, in_channels: int) -> bool:
    if self.projection is not None:
      return self.projection
    return self.needs_projection(self.width, self.strides, in_channels)

  @classmethod
  def needs_projection(cls, width: int, strides: int, in_channels: int) -> bool:
    """Whether a block of this kind needs a projection shortcut: its stride or channel count changes the shape.

    A class method, so that `ResNet` decides without creating a block outside of its `__call__` (an unbound block
    made there breaks Flax's module interception, e.g. `nn.tabulate`)."""
    return strides != 1 or in_channels != width * cls.expansion

  def residual(self, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
    """activation(y + shortcut(x)); the shortcut is a strided 1×1 ConvNorm (`shortcut`) when the shape changes."""
    if self.has_shortcut(x.shape[-1]):
      x = self.conv(y.shape[-1], 1, self.strides, 1, False, "shortcut")(x, train)
    return get_activation(self.activation)(y + x)

  @classmethod
  def channel_sources(cls, name: str, stream: tuple[str, ...], projection: bool,
                      ) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """Which convs produce each conv's input channels, and the block's output channels.

    stream: the convs whose outputs are summed into this block's input (a channel is non-zero when it is alive in
    any of them); projection: whether the block has a `shortcut` conv. Returns ({conv path: its input's
    producers}, the output's producers).
    """
    sources, previous = {}, stream
    for conv in cls.branch:
      sources[f"{name}/{conv}"] = previous
      previous = (f"{name}/{conv}",)
    if not cls.residual_connection:
      return sources, previous
    if projection:
      sources[f"{name}/shortcut"] = stream
      return sources, previous + (f"{name}/shortcut",)
    return sources, tuple(dict.fromkeys(previous + stream))


class PlainBlock(Block):
  """One 3×3 ConvNorm with activation and no shortcut (a VGG-style layer; used by small teacher–student nets)."""
  branch = ("conv1",)
  residual_connection = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return self.conv(self.width, 3, self.strides, self.dilation, True, "conv1")(x, train)


class BasicBlock(Block):
  """Two 3×3 ConvNorms plus a shortcut. Output channels = `width`."""
  branch = ("conv1", "conv2")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.conv(self.width, 3, self.strides, self.dilation, True, "conv1")(x, train)
    y = self.conv(self.width, 3, 1, self.dilation, False, "conv2")(y, train)
    return self.residual(x, y, train)


class BottleneckBlock(Block):
  """1×1 reduce → 3×3 (stride, dilation) → 1×1 expand ×4, plus a shortcut. Output channels = 4·`width`."""
  expansion = 4
  branch = ("conv1", "conv2", "conv3")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.conv(self.width, 1, 1, 1, True, "conv1")(x, train)
    y = self.conv(self.width, 3, self.strides, self.dilation, True, "conv2")(y, train)
    y = self.conv(self.width * self.expansion, 1, 1, 1, False, "conv3")(y, train)
    return self.residual(x, y, train)


BLOCKS = {"plain": PlainBlock, "basic": BasicBlock, "bottleneck": BottleneckBlock}


class ResNet(nn.Module):
  """ResNet feature extractor: (B, H, W, 3) images in [0, 1] → (B, H/s, W/s, C) features, s the output stride.

  stem: "simple" one 3×3 conv at stride 1; "deep" three 3×3 convs (stride 2, widths w/2, w/2, w) + 3×3 max-pool
  stride 2 (the authors' ResNet-D stem with w = 128); "torchvision" one 7×7 conv stride 2 + max-pool.
  Stage s has `depths[s]` blocks; its first block has stride `strides[s]`; all its blocks use `dilations[s]`,
  except that with `dilate_first_block=False` the first block keeps the previous stage's dilation (1 for stage 1),
  as torchvision's `replace_stride_with_dilation` does (its `previous_dilation`).
  """
  depths: Sequence[int] = (1, 1, 1)
  widths: Sequence[int] = (16, 32, 64)
  strides: Sequence[int] = (1, 2, 2)
  dilations: Sequence[int] = (1, 1, 1)
  block: str = "basic"
  stem: str = "simple"
  stem_width: int = 16
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32
  # (conv path as in `channel_sources`, output channels) overriding the widths above; the convs whose outputs are
  # summed into one residual stream must share a width
  conv_widths: tuple[tuple[str, int], ...] = ()
  dilate_first_block: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    unknown = sorted(set(dict(self.conv_widths)) - set(self.channel_sources()[0]))
    if unknown:
      raise ValueError(f"conv_widths names convs that the backbone does not have: {unknown}")
    x = self._stem(x.astype(self.dtype), train)
    for name, block_cls, fields in self._blocks():
      x = block_cls(**fields, name=name)(x, train)
    return x

  def stem_convs(self) -> tuple[str, ...]:
    return ("stage0_conv1",) if self.stem in ("simple", "torchvision") else tuple(f"stage0_conv{i}" for i in (1, 2, 3))

  def channel_sources(self) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """For every conv (path relative to the backbone), the convs whose output channels form its input channels
    (() for the image); and the producers of the backbone's output. A channel fed by several producers (the
    residual stream) is non-zero when it is alive in any of them. Mirrors `__call__`; tests check the two agree.
    """
    sources, stream = {}, ()
    for conv in self.stem_convs():
      sources[conv], stream = stream, (conv,)
    for name, block_cls, fields in self._blocks():
      block_sources, stream = block_cls.channel_sources(name, stream, fields["projection"])
      sources.update(block_sources)
    return sources, stream

  def channel_spaces(self) -> list[tuple[str, ...]]:
    """The convs (paths as in `channel_sources`) partitioned into groups whose outputs are added into one tensor, in
    execution order: a residual stream's producers form one group (e.g. ("stage2_block0/conv2",
    "stage2_block0/shortcut")), every other conv its own. Shape-free: nothing is computed on arrays."""
    return channel_spaces(*self.channel_sources())

  def _blocks(self):
    """Yields (name, block class, its fields) of every block in order.

    The shortcut (`projection`) follows the dense widths, so that a pruned network keeps the dense one's shortcuts.
    """
    if self.block not in BLOCKS:
      raise ValueError(f"unknown block {self.block!r}; choose one of {sorted(BLOCKS)}")
    block_cls = BLOCKS[self.block]
    channels, previous_dilation = self.stem_width, 1
    for s, (depth, width, stride, dilation) in enumerate(zip(self.depths, self.widths, self.strides, self.dilations)):
      for b in range(depth):
        name = f"stage{s + 1}_block{b}"
        fields = dict(width=width, strides=stride if b == 0 else 1,
                      dilation=previous_dilation if b == 0 and not self.dilate_first_block else dilation,
                      activation=self.activation, dtype=self.dtype)
        projection = block_cls.needs_projection(width, fields["strides"], channels)
        widths = tuple((path.split("/", 1)[1], w) for path, w in self.conv_widths if path.startswith(f"{name}/"))
        yield name, block_cls, dict(fields, projection=projection, conv_widths=widths)
        channels = width * block_cls.expansion
      previous_dilation = dilation

  def _stem(self, x: jax.Array, train: bool) -> jax.Array:
    widths = dict(self.conv_widths)
    conv = lambda w, k, s, name: ConvNorm(widths.get(name, w), k, s, 1, self.activation, dtype=self.dtype, name=name)
    if self.stem == "simple":
      return conv(self.stem_width, 3, 1, "stage0_conv1")(x, train)
    if self.stem == "deep":
      half = self.stem_width // 2
      x = conv(half, 3, 2, "stage0_conv1")(x, train)
      x = conv(half, 3, 1, "stage0_conv2")(x, train)
      x = conv(self.stem_width, 3, 1, "stage0_conv3")(x, train)
    elif self.stem == "torchvision":
      x = conv(self.stem_width, 7, 2, "stage0_conv1")(x, train)
    else:
      raise ValueError(f"unknown stem {self.stem!r}; choose one of {STEMS}")
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def channel_spaces(sources: dict[str, tuple[str, ...]], features: tuple[str, ...]) -> list[tuple[str, ...]]:
  """Partitions the convs (keys of `sources`) into groups whose outputs are added into one tensor.

  Two convs share a space when they appear together among the producers of some conv's input or of the backbone's
  output (`features`), directly or through a chain of such appearances.
  """
  space = {conv: {conv} for conv in sources}
  for producers in (*sources.values(), features):
    merged = set().union(*(space[conv] for conv in producers))
    for conv in merged:
      space[conv] = merged
  unique = {id(s): s for s in space.values()}.values()
  order = {conv: i for i, conv in enumerate(sources)}
  return sorted((tuple(sorted(s, key=order.get)) for s in unique), key=lambda s: order[s[0]])
