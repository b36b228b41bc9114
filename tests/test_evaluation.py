"""BatchNorm recalibration after adaptation or pruning, and its pooling over chunks (msp.train.evaluation)."""
import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import teacher_student
from msp.models.layers import ConvNorm
from msp.train import build_meta_learner
from msp.train.evaluation import calibrated_batch_stats, recalibrated_batch_stats


def test_recalibrated_averages_are_the_batch_mean_and_biased_variance():
  layer = ConvNorm(features=5, kernel_size=1, activation=None, norm_momentum=0.7)
  x = jax.random.normal(jax.random.key(0), (6, 4, 4, 3)) * 2.0 + 1.0
  variables = layer.init(jax.random.key(1), x, train=False)
  stats = recalibrated_batch_stats(layer.apply, variables, x)
  # a 1×1 convolution is a matrix product over the channel axis
  y = np.asarray(x).reshape(-1, 3) @ np.asarray(variables["params"]["conv"]["kernel"]).reshape(3, 5)
  np.testing.assert_allclose(stats["norm"]["mean"], y.mean(axis=0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["norm"]["var"], y.var(axis=0), rtol=1e-4, atol=1e-5)


def test_recalibration_keeps_its_precision_for_large_statistics():
  """Features of scale ~1e4 (variance ~1e8) at momentum 0.99: the statistics come back to float32 precision (the
  earlier a / (1 − b + a) lost them to cancellation, or returned inf / NaN)."""
  layer = ConvNorm(features=4, kernel_size=1, activation=None, norm_momentum=0.99)
  x = jax.random.normal(jax.random.key(6), (8, 4, 4, 3)) * 3e3 + 1e3
  variables = layer.init(jax.random.key(7), x, train=False)
  stats = recalibrated_batch_stats(layer.apply, variables, x)
  y = np.asarray(x, np.float64).reshape(-1, 3) @ np.asarray(variables["params"]["conv"]["kernel"], np.float64).reshape(3, 4)
  np.testing.assert_allclose(stats["norm"]["mean"], y.mean(axis=0), rtol=1e-4)
  np.testing.assert_allclose(stats["norm"]["var"], y.var(axis=0), rtol=1e-4)


def test_inference_with_recalibrated_averages_reproduces_training_mode():
  config = teacher_student.get_config("tiny")
  learner = build_meta_learner(config)
  images = jax.random.uniform(jax.random.key(2), (16, config.image_size, config.image_size, 3))
  variables = learner.model.init(jax.random.key(3), images, train=False)
  train_mode, _ = learner.model.apply(variables, images, train=True, mutable=["batch_stats"])
  before = learner.model.apply(variables, images, train=False)
  after = learner.model.apply({**variables, "batch_stats": recalibrated_batch_stats(learner.model.apply, variables,
                                                                                  images)}, images, train=False)
  for task in train_mode:
    assert float(jnp.max(jnp.abs(before[task] - train_mode[task]))) > 1e-2  # initial averages (0, 1) do not match
    np.testing.assert_allclose(after[task], train_mode[task], rtol=1e-4, atol=1e-4)


def test_calibration_in_chunks_pools_each_chunks_statistics():
  """Chunks of 4 + 4 + 2 images: the mean of the chunk means and the pooled variance E[var + mean²] − mean², weighted
  by chunk size, computed here in numpy for a 1×1 ConvNorm (a matrix product over channels); one chunk is exactly
  `recalibrated_batch_stats`; any chunking of one layer gives the whole batch's mean and biased variance."""
  layer = ConvNorm(features=3, kernel_size=1, activation=None)
  x = jax.random.normal(jax.random.key(4), (10, 3, 3, 2)) * 3.0 - 1.0
  variables = layer.init(jax.random.key(5), x, train=False)
  y = np.asarray(x, np.float64) @ np.asarray(variables["params"]["conv"]["kernel"], np.float64).reshape(2, 3)
  chunks = [y[:4].reshape(-1, 3), y[4:8].reshape(-1, 3), y[8:].reshape(-1, 3)]
  weights = np.array([4, 4, 2]) / 10
  means = np.stack([c.mean(0) for c in chunks])
  second = np.stack([c.var(0) + c.mean(0) ** 2 for c in chunks])
  mean = weights @ means
  stats = calibrated_batch_stats(layer.apply, variables, x, batch_size=4)
  np.testing.assert_allclose(stats["norm"]["mean"], mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["norm"]["var"], weights @ second - mean ** 2, rtol=1e-4, atol=1e-4)
  whole = calibrated_batch_stats(layer.apply, variables, x, batch_size=10)
  exact = recalibrated_batch_stats(layer.apply, variables, x)
  for key in ("mean", "var"):
    np.testing.assert_array_equal(whole["norm"][key], exact["norm"][key])
  # for a single layer, whose input does not depend on normalisation, pooling is exact: the whole batch's statistics
  flat = y.reshape(-1, 3)
  for size in (3, 4, 7):
    pooled = calibrated_batch_stats(layer.apply, variables, x, batch_size=size)
    np.testing.assert_allclose(pooled["norm"]["mean"], flat.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pooled["norm"]["var"], flat.var(0), rtol=1e-4, atol=1e-4)
