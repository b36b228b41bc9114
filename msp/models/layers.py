"""Building blocks shared by backbones and heads.

`ConvNorm` is the unit that channel-wise sparsity acts on: a bias-free convolution followed by BatchNorm. Its
parameters live at `<path>/conv/kernel` (HWIO) and `<path>/norm/{scale,bias}`, a naming that
`msp.sparsity.groups` relies on to couple each output channel of the kernel with the BatchNorm entries behind it.
"""
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from msp.models.conv import conv2d

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "softplus": nn.softplus,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Returns the element-wise activation called `name` (one of `ACTIVATIONS`)."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


# Every convolution in msp's models: flax's, lowered through `conv2d` (fast second derivatives on CPU).
Conv = functools.partial(nn.Conv, conv_general_dilated=conv2d)


def same_padding(kernel_size: int, dilation: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Symmetric padding p = dilation·(k−1)/2 per spatial side, as PyTorch convs use (so weights port exactly)."""
  p = dilation * (kernel_size - 1) // 2
  return ((p, p), (p, p))


class ConvNorm(nn.Module):
  """Bias-free k×k conv → BatchNorm → optional activation.

  Input (B, H, W, C_in) → output (B, ⌈H/stride⌉, ⌈W/stride⌉, features).
  With `train=True` BatchNorm normalises with batch statistics and (if the `batch_stats` collection is mutable)
  updates its running averages; with `train=False` it uses the running averages.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  activation: str | None = "relu"
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv(
        self.features, (self.kernel_size, self.kernel_size), strides=self.strides,
        padding=same_padding(self.kernel_size, self.dilation), kernel_dilation=self.dilation,
        use_bias=False, dtype=self.dtype, param_dtype=self.dtype,
        kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"), name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.norm_momentum, epsilon=self.norm_epsilon,
                     dtype=self.dtype, param_dtype=self.dtype, name="norm")(x)
    return get_activation(self.activation)(x) if self.activation else x
