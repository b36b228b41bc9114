"""The convolution msp's models use: XLA's native convolution with a second derivative that XLA:CPU runs fast.

The second-order meta-gradient differentiates each convolution's kernel gradient once more, with respect to the
layer's input. JAX writes that derivative as a convolution whose batch and feature dimensions are swapped; XLA:CPU
has no fast kernel for it and runs a generic loop: measured on the teacher–student step (16², E = 4, K = 1), those
convolutions took ~70 % of the step. Here the kernel gradient is its own differentiable function whose derivative
with respect to the input is written as one matrix multiply followed by the transpose of "patches" (strided slices
of the padded input): pads and adds that XLA:CPU fuses. Forward passes and first derivatives stay native, so
first-order steps, inference and export are unchanged; on GPU/TPU the native rules are used throughout.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")


def patches(x: jax.Array, kernel_shape: Sequence[int], strides: Sequence[int],
            padding: Sequence[tuple[int, int]], dilation: Sequence[int]) -> jax.Array:
  """(B, H, W, C) → (B, H_out, W_out, kh·kw·C): the input window under each output pixel, ordered (i, j, c).

  With the kernel reshaped to (kh·kw·C, C_out), patches @ kernel is the convolution.
  """
  kh, kw = kernel_shape
  (sh, sw), (dh, dw) = strides, dilation
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  batch, height, width, channels = x.shape
  out_h = (height - (kh - 1) * dh - 1) // sh + 1
  out_w = (width - (kw - 1) * dw - 1) // sw + 1
  windows = [lax.slice(x, (0, i * dh, j * dw, 0),
                       (batch, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, channels), (1, sh, sw, 1))
             for i in range(kh) for j in range(kw)]
  return windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)


def _conv_with_fast_second_derivative(x, kernel, strides, padding, dilation, precision):
  conv = lambda x, kernel: lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                                    dimension_numbers=NHWC, precision=precision)
  kernel_shape = kernel.shape

  # `kernel` only gives the result its type (inside shard_map: varying over the mesh or not); the convolution is
  # linear in the kernel, so its VJP does not depend on the kernel's value.
  @jax.custom_vjp
  def kernel_gradient(x, cotangent, kernel):
    return jax.vjp(lambda k: conv(x, k), kernel)[1](cotangent)[0]

  def kernel_gradient_fwd(x, cotangent, kernel):
    return kernel_gradient(x, cotangent, kernel), (x, cotangent)

  def kernel_gradient_bwd(residuals, kernel_bar):
    x, cotangent = residuals
    window_bar = cotangent @ kernel_bar.reshape(-1, kernel_shape[-1]).T  # (B, H_out, W_out, kh·kw·C_in)
    _, patches_vjp = jax.vjp(lambda x: patches(x, kernel_shape[:2], strides, padding, dilation), x)
    return patches_vjp(window_bar)[0], conv(x, kernel_bar), None

  kernel_gradient.defvjp(kernel_gradient_fwd, kernel_gradient_bwd)

  @jax.custom_vjp
  def fast(x, kernel):
    return conv(x, kernel)

  def fast_fwd(x, kernel):
    return conv(x, kernel), (x, kernel)

  def fast_bwd(residuals, cotangent):
    x, kernel = residuals
    x_bar = jax.vjp(lambda x: conv(x, kernel), x)[1](cotangent)[0]
    return x_bar, kernel_gradient(x, cotangent, kernel)

  fast.defvjp(fast_fwd, fast_bwd)
  return fast(x, kernel)


def conv2d(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
           padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
           rhs_dilation: Sequence[int] | None = None, dimension_numbers=None, feature_group_count: int = 1,
           precision=None, preferred_element_type=None) -> jax.Array:
  """`lax.conv_general_dilated` (the signature `flax.linen.Conv` calls) with fast second derivatives on CPU.

  lhs (B, H, W, C_in), rhs (kh, kw, C_in, C_out) → (B, H_out, W_out, C_out); values and first derivatives are the
  native convolution's, second derivatives equal up to float summation order. Input dilation, grouped convolutions,
  other layouts and non-CPU backends use the native convolution and its native derivatives.
  """
  native = (jax.default_backend() != "cpu" or lhs.ndim != 4 or feature_group_count != 1
            or preferred_element_type is not None or any(d != 1 for d in lhs_dilation or ())
            or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            != lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC))
  if native:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision,
                                    preferred_element_type=preferred_element_type)
  dilation = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    effective = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation)]
    padding = lax.padtype_to_pads(lhs.shape[1:3], effective, window_strides, padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return _conv_with_fast_second_derivative(lhs, rhs, tuple(window_strides), padding, dilation, precision)
