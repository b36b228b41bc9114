"""Per-task losses: raw network output and target of one batch → scalar (mean over valid pixels or examples).

Conventions: segmentation labels are integers with `ignore_index` for void; depth is metres with 0 = invalid;
normals are unit vectors with the zero vector = invalid; edges are {0, 1}; attributes are {0, 1}.
"""
import jax
import jax.numpy as jnp
import optax


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Σ mask·values / max(Σ mask, 1): the mean over valid entries, 0 when none is valid."""
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def segmentation_loss(logits: jax.Array, labels: jax.Array, ignore_index: int = -1,
                      label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy. logits (B, H, W, C); labels (B, H, W) int in [0, C) or `ignore_index`.

  label_smoothing ε: the target distribution is (1 − ε)·one-hot + ε/C, i.e. the loss is (1 − ε)·CE + ε·mean over
  classes of −log p_c (segmentation_models_pytorch's SoftCrossEntropyLoss(smooth_factor=ε); the authors use 0.1).
  """
  valid = labels != ignore_index
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
  if label_smoothing:
    uniform = -jnp.mean(jax.nn.log_softmax(logits, axis=-1), axis=-1)
    ce = (1.0 - label_smoothing) * ce + label_smoothing * uniform
  return _masked_mean(ce, valid)


DEPTH_NORMALIZATIONS = ("none", "per_image_max")


def normalize_depth(depth: jax.Array, normalization: str = "none") -> jax.Array:
  """depth (B, H, W, 1) metres, 0 = invalid → the same in the units the depth loss and metric use.

  "none": metres. "per_image_max": each image divided by its largest depth, so valid pixels lie in (0, 1] and
  invalid ones stay 0 (the authors' data loader divides by the image's maximum; it then also clips to [0.1, 99th
  percentile], which msp does not, as that would make invalid pixels valid). The network then predicts
  normalised depth, and the depth metric must be computed with the same normalisation.
  """
  if normalization == "none":
    return depth
  if normalization != "per_image_max":
    raise ValueError(f"depth normalization {normalization!r}; choose one of {DEPTH_NORMALIZATIONS}")
  peak = jnp.max(depth, axis=(1, 2, 3), keepdims=True)
  return depth / jnp.where(peak > 0, peak, 1.0)


def depth_loss(pred: jax.Array, depth: jax.Array, normalization: str = "none") -> jax.Array:
  """L1 over valid pixels, in metres or `normalize_depth`'s units. pred, depth (B, H, W, 1); depth 0 = invalid."""
  return _masked_mean(jnp.abs(pred - normalize_depth(depth, normalization)), depth > 0)


def unit_normals(raw: jax.Array, eps: float = 1e-12) -> jax.Array:
  """(…, 3) raw output → unit vectors (…, 3); a safe norm, so the zero vector gives zeros and finite gradients."""
  sq = jnp.sum(raw * raw, axis=-1, keepdims=True)
  return raw * jax.lax.rsqrt(jnp.maximum(sq, eps))


def normals_loss(raw: jax.Array, normals: jax.Array) -> jax.Array:
  """1 − cos(angle) over valid pixels. raw (B, H, W, 3) unnormalised; normals (B, H, W, 3) unit, 0 = invalid."""
  cos = jnp.sum(unit_normals(raw) * normals, axis=-1)
  return _masked_mean(1.0 - cos, jnp.any(normals != 0, axis=-1))


def edge_loss(logits: jax.Array, edges: jax.Array) -> jax.Array:
  """Class-balanced binary cross-entropy (HED): positives weighted by the negative fraction and vice versa.

  logits, edges (B, H, W, 1); the fractions are taken over the whole batch.
  """
  edges = edges.astype(logits.dtype)
  positive_fraction = jnp.mean(edges)
  weights = edges * (1.0 - positive_fraction) + (1.0 - edges) * positive_fraction
  return jnp.mean(weights * optax.sigmoid_binary_cross_entropy(logits, edges))


def edge_huber_loss(logits: jax.Array, edges: jax.Array, delta: float = 0.2) -> jax.Array:
  """Huber loss between sigmoid(logits) and the edge map, mean over pixels: quadratic for |error| ≤ delta,
  linear beyond (the authors' `HuberLoss(delta=0.2)` on their sigmoid output). logits, edges (B, H, W, 1)."""
  return jnp.mean(optax.huber_loss(jax.nn.sigmoid(logits), edges.astype(logits.dtype), delta=delta))


def attribute_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Binary cross-entropy with logits, mean over examples and attributes. logits, labels (B, A); labels {0, 1}."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))


def regression_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all entries. pred, target of equal shape."""
  return jnp.mean(jnp.square(pred - target))
