"""Loss options: segmentation label smoothing, depth normalised by each image's maximum (loss and metric), edge
Huber loss; and the registry options that choose them."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msp.tasks import build_task, losses


def test_label_smoothing_is_cross_entropy_with_smoothed_targets_and_ignores_void():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 3, 4))
  labels = jnp.array(np.random.default_rng(0).integers(-1, 4, (2, 3, 3)))
  valid = np.asarray(labels) != -1
  smoothed = optax.smooth_labels(jax.nn.one_hot(jnp.where(labels < 0, 0, labels), 4), 0.1)
  expected = np.asarray(optax.softmax_cross_entropy(logits, smoothed))[valid].mean()
  np.testing.assert_allclose(losses.segmentation_loss(logits, labels, label_smoothing=0.1), expected, rtol=1e-6)
  plain = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0)))[valid].mean()
  np.testing.assert_allclose(losses.segmentation_loss(logits, labels), plain, rtol=1e-6)


def test_depth_per_image_max_by_hand():
  depth = jnp.array([[2.0, 4.0], [0.0, 1.0], [3.0, 0.0], [0.0, 6.0]]).reshape(2, 2, 2, 1)  # image maxima 4 and 6
  pred = jnp.full_like(depth, 0.5)
  np.testing.assert_allclose(losses.normalize_depth(depth, "per_image_max").ravel(),
                             [0.5, 1.0, 0.0, 0.25, 0.5, 0.0, 0.0, 1.0])
  # valid pixels: |0.5 − 0.5|, |0.5 − 1|, |0.5 − 0.25|, |0.5 − 0.5|, |0.5 − 1| → mean 1.25 / 5
  np.testing.assert_allclose(losses.depth_loss(pred, depth, "per_image_max"), 0.25, rtol=1e-6)
  np.testing.assert_allclose(losses.depth_loss(pred, depth), (1.5 + 3.5 + 0.5 + 2.5 + 5.5) / 5, rtol=1e-6)
  task = build_task("depth", "depth", normalization="per_image_max")
  metric = task.metric
  state = metric.update(metric.init(), losses.normalize_depth(depth, "per_image_max"), depth)
  assert metric.compute(state)["abs_err"] == 0.0  # the metric normalises its target like the loss
  np.testing.assert_allclose(task.loss(pred, depth), 0.25, rtol=1e-6)


def test_edge_huber_loss_by_hand():
  logits = jnp.array([0.0, 0.0, 10.0]).reshape(1, 1, 3, 1)  # sigmoid 0.5, 0.5, ≈1
  edges = jnp.array([1.0, 0.4, 1.0]).reshape(1, 1, 3, 1)
  # errors 0.5 (> δ = 0.2: 0.2·(0.5 − 0.1) = 0.08), 0.1 (≤ δ: 0.5·0.01 = 0.005), ≈0
  np.testing.assert_allclose(losses.edge_huber_loss(logits, edges), (0.08 + 0.005) / 3, rtol=1e-4)
  task = build_task("edges", "edges", loss="huber", huber_delta=0.2)
  np.testing.assert_allclose(task.loss(logits, edges), (0.08 + 0.005) / 3, rtol=1e-4)
  assert build_task("edges", "edges").loss is losses.edge_loss


@pytest.mark.parametrize("kind,options", [("depth", dict(normalization="log")), ("edges", dict(loss="l1")),
                                          ("segmentation", dict(num_classes=3, label_smoothing=1.0))])
def test_bad_loss_options_are_named(kind, options):
  with pytest.raises(ValueError, match=f"task 't' of kind '{kind}': bad options"):
    build_task("t", kind, **options)
