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


def segmentation_loss(logits: jax.Array, labels: jax.Array, ignore_index: int = -1) -> jax.Array:
  """Cross-entropy. logits (B, H, W, C); labels (B, H, W) int in [0, C) or `ignore_index`."""
  valid = labels != ignore_index
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
  return _masked_mean(ce, valid)


def depth_loss(pred: jax.Array, depth: jax.Array) -> jax.Array:
  """L1 in metres over valid pixels. pred, depth (B, H, W, 1); depth 0 marks invalid pixels."""
  return _masked_mean(jnp.abs(pred - depth), depth > 0)


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


def attribute_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Binary cross-entropy with logits, mean over examples and attributes. logits, labels (B, A); labels {0, 1}."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))


def regression_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all entries. pred, target of equal shape."""
  return jnp.mean(jnp.square(pred - target))
