"""`msp.models.conv.conv2d`: the native convolution's values and derivatives, with its own second derivative.

Checked in float64 against JAX's native convolution rules and against central finite differences of the kernel
gradient (which is what the second-order meta-gradient differentiates).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from msp.models.conv import NHWC, conv2d

# (kernel size, stride, dilation, padding): the shapes msp's backbones and heads use
CASES = [(3, 1, 1, ((1, 1), (1, 1))), (3, 2, 1, ((1, 1), (1, 1))), (3, 1, 2, ((2, 2), (2, 2))), (1, 1, 1, "SAME"),
         (1, 2, 1, ((0, 0), (0, 0))), (7, 2, 1, ((3, 3), (3, 3))), (3, 2, 1, "VALID")]


def _convs(stride, dilation, padding):
  native = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding, rhs_dilation=(dilation, dilation),
                                                 dimension_numbers=NHWC)
  ours = lambda x, w: conv2d(x, w, (stride, stride), padding, rhs_dilation=(dilation, dilation),
                             dimension_numbers=NHWC)
  return native, ours


def _inputs(kernel, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(2, 9, 8, 3))), jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)))


@pytest.mark.parametrize("kernel,stride,dilation,padding", CASES)
def test_values_and_second_order_meta_gradient_match_native(x64, kernel, stride, dilation, padding):
  native, ours = _convs(stride, dilation, padding)
  x, w = _inputs(kernel)

  def meta_gradient(conv):
    def outer(w, x):  # one inner SGD step on a smooth loss, then a smooth outer loss: second order in w and x
      g = jax.grad(lambda w: jnp.sum(jnp.tanh(conv(x, w)) ** 2))(w)
      return jnp.sum(jnp.sin(conv(1.3 * x, w - 0.1 * g)))
    return jax.grad(outer, argnums=(0, 1))(w, x)

  np.testing.assert_allclose(ours(x, w), native(x, w), rtol=1e-12, atol=1e-12)
  for got, want in zip(meta_gradient(ours), meta_gradient(native)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel,stride,dilation,padding", CASES[:3])
def test_kernel_gradient_derivative_matches_finite_differences(x64, kernel, stride, dilation, padding):
  _, ours = _convs(stride, dilation, padding)
  x, w = _inputs(kernel, seed=1)
  probe = jnp.asarray(np.random.default_rng(2).normal(size=w.shape))
  # f(x) = <probe, ∂/∂w Σ tanh(conv(x, w))>: its x-gradient goes through the custom rule of the kernel gradient.
  f = lambda x: jnp.sum(probe * jax.grad(lambda w: jnp.sum(jnp.tanh(ours(x, w))))(w))
  direction = jnp.asarray(np.random.default_rng(3).normal(size=x.shape))
  eps = 1e-5
  finite_difference = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(jnp.sum(jax.grad(f)(x) * direction), finite_difference, rtol=1e-7)


def test_strided_convolution_worked_by_hand():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # rows [0..3], [4..7], [8..11], [12..15]
  kernel = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 2, 1, 1)
  y = conv2d(x, kernel, (2, 2), ((0, 0), (0, 0)), dimension_numbers=NHWC)
  assert y.shape == (1, 2, 2, 1)
  assert float(y[0, 0, 0, 0]) == 1 * 0 + 2 * 1 + 3 * 4 + 4 * 5
  assert float(y[0, 1, 1, 0]) == 1 * 10 + 2 * 11 + 3 * 14 + 4 * 15


def test_unsupported_forms_fall_back_to_native():
  x, w = _inputs(3)
  got = conv2d(x, w, (1, 1), ((1, 1), (1, 1)), lhs_dilation=(2, 2), dimension_numbers=NHWC)
  want = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), lhs_dilation=(2, 2), dimension_numbers=NHWC)
  np.testing.assert_array_equal(got, want)
