"""The convolution msp's models use: XLA's native convolution with a second derivative that XLA:CPU runs fast.

The second-order meta-gradient differentiates each convolution's kernel gradient once more, with respect to the
layer's input. JAX derives that from the kernel gradient's own form, a convolution whose batch and feature
dimensions are swapped, and gets another such convolution; XLA:CPU has no fast kernel for those and runs a generic
loop: measured on the teacher–student step (16², E = 4, K = 1), they took ~70 % of the step. Mathematically the
derivative is the plain input gradient of a convolution (see `kernel_gradient_bwd`), so the kernel gradient is
given its own VJP that says so. Forward passes and first derivatives are unchanged; GPU/TPU keep JAX's rules.
"""
from typing import Sequence

import jax
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_with_fast_second_derivative(x, kernel, strides, padding, dilation, precision):
  conv = lambda x, kernel: lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                                    dimension_numbers=NHWC, precision=precision)
  input_gradient = lambda x, kernel, cotangent: jax.vjp(lambda x: conv(x, kernel), x)[1](cotangent)[0]

  # `kernel` only gives the result its type (inside shard_map: varying over the mesh or not); the convolution is
  # linear in the kernel, so its VJP does not depend on the kernel's value.
  @jax.custom_vjp
  def kernel_gradient(x, cotangent, kernel):
    return jax.vjp(lambda k: conv(x, k), kernel)[1](cotangent)[0]

  def kernel_gradient_fwd(x, cotangent, kernel):
    return kernel_gradient(x, cotangent, kernel), (x, cotangent)

  def kernel_gradient_bwd(residuals, kernel_bar):
    x, cotangent = residuals
    # ⟨K̄, kernel_gradient(x, ȳ)⟩ = ⟨conv(x, K̄), ȳ⟩: its x-derivative is conv(·, K̄)'s input gradient at ȳ, the
    # standard-layout transposed convolution that the first-order backward pass uses too.
    return input_gradient(x, kernel_bar, cotangent), conv(x, kernel_bar), None

  kernel_gradient.defvjp(kernel_gradient_fwd, kernel_gradient_bwd)

  @jax.custom_vjp
  def fast(x, kernel):
    return conv(x, kernel)

  def fast_fwd(x, kernel):
    return conv(x, kernel), (x, kernel)

  def fast_bwd(residuals, cotangent):
    x, kernel = residuals
    return input_gradient(x, kernel, cotangent), kernel_gradient(x, cotangent, kernel)

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
