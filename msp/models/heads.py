"""Task heads: a dense per-pixel head and an image-level attribute head (Flax Linen).

Heads are not sparsified. Dense predictions are bilinearly upsampled to the input resolution, so losses and
metrics always compare at the resolution of the targets.
"""
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from msp.models.layers import Conv, get_activation, same_padding


class Head(nn.Module):
  """Fields shared by the heads; `features_conv` is their first layer: 3×3 conv (`width`, bias) → activation."""
  out_channels: int
  width: int = 32
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32
  # the convs that read the backbone's features (their kernels' input axis is the features' channels)
  feature_layers: ClassVar[tuple[str, ...]] = ("conv",)

  def features_conv(self, features: jax.Array) -> jax.Array:
    x = Conv(self.width, (3, 3), padding=same_padding(3, 1), dtype=self.dtype, param_dtype=self.dtype,
                name="conv")(features)
    return get_activation(self.activation)(x)


class DenseHead(Head):
  """(B, h, w, C_feat) features → (B, H, W, out_channels) raw outputs at `output_size` = (H, W).

  3×3 conv (`width` channels, bias) → activation → 1×1 conv to `out_channels` → bilinear upsampling.
  """

  @nn.compact
  def __call__(self, features: jax.Array, output_size: tuple[int, int], train: bool) -> jax.Array:
    del train
    x = self.features_conv(features)
    x = Conv(self.out_channels, (1, 1), dtype=self.dtype, param_dtype=self.dtype, name="out")(x)
    if x.shape[1:3] != tuple(output_size):
      x = jax.image.resize(x, (x.shape[0], *output_size, x.shape[-1]), method="bilinear")
    return x


class AttributeHead(Head):
  """(B, h, w, C_feat) features → (B, out_channels) logits, one per binary attribute.

  3×3 conv → activation → global average pool → dense (`width`) → activation → dense to `out_channels`.
  """

  @nn.compact
  def __call__(self, features: jax.Array, output_size: tuple[int, int], train: bool) -> jax.Array:
    del output_size, train
    x = jnp.mean(self.features_conv(features), axis=(1, 2))
    x = get_activation(self.activation)(nn.Dense(self.width, dtype=self.dtype, param_dtype=self.dtype,
                                                 name="hidden")(x))
    return nn.Dense(self.out_channels, dtype=self.dtype, param_dtype=self.dtype, name="out")(x)


# msp.models.deeplab (imported by the package) adds its heads: "aspp", "conv_pool_mlp".
HEADS = {"dense": DenseHead, "attribute": AttributeHead}
