"""BatchNorm recalibration after adaptation or pruning (msp.train.evaluation.recalibrated_batch_stats)."""
import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import teacher_student
from msp.models.layers import ConvNorm
from msp.train import build_meta_learner
from msp.train.evaluation import recalibrated_batch_stats


def test_recalibrated_averages_are_the_batch_mean_and_biased_variance():
  layer = ConvNorm(features=5, kernel_size=1, activation=None, norm_momentum=0.7)
  x = jax.random.normal(jax.random.key(0), (6, 4, 4, 3)) * 2.0 + 1.0
  variables = layer.init(jax.random.key(1), x, train=False)
  stats = recalibrated_batch_stats(layer.apply, variables, x)
  # a 1×1 convolution is a matrix product over the channel axis
  y = np.asarray(x).reshape(-1, 3) @ np.asarray(variables["params"]["conv"]["kernel"]).reshape(3, 5)
  np.testing.assert_allclose(stats["norm"]["mean"], y.mean(axis=0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["norm"]["var"], y.var(axis=0), rtol=1e-4, atol=1e-5)


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
