"""Paper-scale task heads (docs/method.md §13): DeepLab-v3's ASPP dense head and the authors' conv + pooled-MLP head.

Importing this module (the `msp.models` package does) registers both in `msp.models.heads.HEADS` ("aspp",
"conv_pool_mlp"); a config chooses them per head role with `model.head_kinds` (see `msp.models.build_model`).

Dropout is active only when `train=True` *and* the caller passes a "dropout" rng (`apply(..., rngs={"dropout":
key})`); otherwise it is the identity. msp's meta-step and evaluation pass no rng, so meta-training runs these heads
without dropout (using it there would need a key carried through the episode and inner loops); a training loop of
one's own can pass one.
"""
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from msp.models.heads import HEADS, Head
from msp.models.layers import Conv, ConvNorm, get_activation, same_padding


def _dropout(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """nn.Dropout(rate) on x when training with a "dropout" rng, else x (see the module docstring)."""
  return nn.Dropout(rate, deterministic=not (train and module.has_rng("dropout")))(x)


class ASPPHead(Head):
  """DeepLab-v3 head: (B, h, w, C_feat) features → (B, H, W, out_channels) raw outputs at `output_size` = (H, W).

  ASPP with `width` (256) channels per branch: a 1×1 conv, three 3×3 convs of dilation `rates` (12/24/36 suit
  output stride 8) and image pooling (global mean → 1×1 conv → broadcast back to h×w), each with BatchNorm and
  activation; the five are concatenated (5·width) → 1×1 projection to `width` + BatchNorm + activation → dropout →
  3×3 conv + BatchNorm + activation → 1×1 conv (bias) to `out_channels` at h×w → bilinear upsampling to (H, W)
  (half-pixel centres, PyTorch's align_corners=False), so losses compare at the targets' resolution.
  Convs before the last have no bias (as torchvision's DeepLabHead, whose layout this is).

  Parameters: `aspp{0..3}` (1×1, then the dilated 3×3s), `aspp_pool`, `project`, `decode`: conv kernels, each with
  its BatchNorm at `<name>_norm`; `out`: the classifier (kernel, bias). The branch convs are direct children
  because `msp.export` slices their input axis at `head_<task>/<layer>/kernel` (`feature_layers`).
  """
  rates: tuple[int, ...] = (12, 24, 36)
  dropout: float = 0.5
  feature_layers: ClassVar[tuple[str, ...]] = ("aspp0", "aspp1", "aspp2", "aspp3", "aspp_pool")

  def _conv_norm(self, x: jax.Array, kernel_size: int, dilation: int, name: str, train: bool) -> jax.Array:
    """Bias-free conv (`width` channels, 'same' padding) → BatchNorm (ConvNorm's settings) → activation."""
    x = Conv(self.width, (kernel_size, kernel_size), padding=same_padding(kernel_size, dilation),
                kernel_dilation=dilation, use_bias=False, dtype=self.dtype, param_dtype=self.dtype, name=name)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=ConvNorm.norm_momentum, epsilon=ConvNorm.norm_epsilon,
                     dtype=self.dtype, param_dtype=self.dtype, name=f"{name}_norm")(x)
    return get_activation(self.activation)(x)

  @nn.compact
  def __call__(self, features: jax.Array, output_size: tuple[int, int], train: bool) -> jax.Array:
    branches = [self._conv_norm(features, 1, 1, "aspp0", train)]
    branches += [self._conv_norm(features, 3, rate, f"aspp{i + 1}", train) for i, rate in enumerate(self.rates)]
    pooled = self._conv_norm(jnp.mean(features, axis=(1, 2), keepdims=True), 1, 1, "aspp_pool", train)
    branches.append(jnp.broadcast_to(pooled, (*features.shape[:3], self.width)))
    x = self._conv_norm(jnp.concatenate(branches, axis=-1), 1, 1, "project", train)
    x = self._conv_norm(_dropout(self, x, self.dropout, train), 3, 1, "decode", train)
    x = Conv(self.out_channels, (1, 1), dtype=self.dtype, param_dtype=self.dtype, name="out")(x)
    if x.shape[1:3] != tuple(output_size):
      x = jax.image.resize(x, (x.shape[0], *output_size, x.shape[-1]), method="bilinear")
    return x


class ConvPoolMLPHead(Head):
  """The authors' attribute head: (B, h, w, C_feat) features → (B, out_channels) logits, one per attribute.

  3×3 conv (`width` = 64 channels, bias) → activation → 2×2 max-pool stride 2 (floor, as PyTorch's MaxPool2d) →
  global mean → dropout `dropout[0]` → dense to width // 2 (`hidden`) → activation → dropout `dropout[1]` → dense
  to `out_channels` (`out`). The authors end with a sigmoid; msp keeps logits (the loss applies the sigmoid).
  """
  dropout: tuple[float, float] = (0.6, 0.4)

  @nn.compact
  def __call__(self, features: jax.Array, output_size: tuple[int, int], train: bool) -> jax.Array:
    del output_size
    if min(features.shape[1:3]) < 2:
      raise ValueError(f"ConvPoolMLPHead max-pools 2×2: features of {features.shape[1]}×{features.shape[2]} are "
                       "too small; use a larger image or the `attribute` head")
    x = nn.max_pool(self.features_conv(features), (2, 2), strides=(2, 2))
    x = _dropout(self, jnp.mean(x, axis=(1, 2)), self.dropout[0], train)
    x = nn.Dense(self.width // 2, dtype=self.dtype, param_dtype=self.dtype, name="hidden")(x)
    x = _dropout(self, get_activation(self.activation)(x), self.dropout[1], train)
    return nn.Dense(self.out_channels, dtype=self.dtype, param_dtype=self.dtype, name="out")(x)


HEADS.update(aspp=ASPPHead, conv_pool_mlp=ConvPoolMLPHead)
