"""Teacher–student regression data on random tensors: a known sparse structure to recover.

The teacher is a `MultiTaskNet` of the student's architecture whose sparsified layers keep only their first
`alive_per_layer` channels (one count for every layer, or one per layer; the others are exactly zero). Inputs are
uniform random images; each task's target is the teacher's output for that task, standardised to unit variance.
Fresh data every call (the `fresh` regime), or draws from a fixed pool of `pool_size` examples (the small-data
regime where the inner loop can overfit).
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from msp.meta import MetaBatch, sample_task_masks
from msp.models import MultiTaskNet
from msp.sparsity import GroupSpec


class TeacherStudent:
  """Makes batches {"image": (B, S, S, 3) in [0, 1], task: (B, S, S, C)} from a sparse teacher."""

  def __init__(self, model: MultiTaskNet, spec: GroupSpec, task_names: tuple[str, ...], image_size: int,
               alive_per_layer: int | Sequence[int], seed: int = 0, pool_size: int | None = None):
    self.model, self.task_names, self.image_size = model, task_names, image_size
    key = jax.random.key(seed)
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, image_size, image_size, 3)), train=False))(key)
    alive = ((alive_per_layer,) * spec.num_layers if isinstance(alive_per_layer, int) else tuple(alive_per_layer))
    if len(alive) != spec.num_layers or not all(1 <= a <= layer.num_groups for a, layer in zip(alive, spec.layers)):
      raise ValueError(f"teacher alive_per_layer={alive_per_layer}: give one count in [1, channels] for each of the "
                       f"{spec.num_layers} layers {[layer.num_groups for layer in spec.layers]}")
    masks = [(jnp.arange(layer.num_groups) < a).astype(jnp.float32) for a, layer in zip(alive, spec.layers)]
    self.alive_per_layer = alive
    self.variables = {**variables, "params": spec.scale_groups(variables["params"], masks)}
    self._forward = jax.jit(lambda x: model.apply(self.variables, x, train=False))
    probe = self._forward(self._images(np.random.default_rng(seed + 1), 64))
    self._scale = {t: float(jnp.std(probe[t])) + 1e-8 for t in task_names}
    self._offset = {t: float(jnp.mean(probe[t])) for t in task_names}
    self._pool = None
    if pool_size is not None:
      self._pool = self._label(self._images(np.random.default_rng(seed + 2), pool_size))

  def _images(self, rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.0, 1.0, (n, self.image_size, self.image_size, 3)).astype(np.float32)

  def _label(self, images: np.ndarray) -> dict[str, np.ndarray]:
    outputs = self._forward(images)
    batch = {t: np.asarray((outputs[t] - self._offset[t]) / self._scale[t]) for t in self.task_names}
    return {"image": images, **batch}

  def batch(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n training examples: fresh ones, or n drawn without replacement from the fixed pool."""
    if self._pool is None:
      return self.fresh_batch(rng, n)
    idx = rng.choice(len(self._pool["image"]), size=n, replace=False)
    return {k: v[idx] for k, v in self._pool.items()}

  def fresh_batch(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n new examples, never from the pool (test data)."""
    return self._label(self._images(rng, n))

  def meta_batch(self, rng: np.random.Generator, episodes: int, support_size: int, query_size: int,
                 task_sampling: str = "subsets") -> MetaBatch:
    """E episodes with disjoint support (support_size) and query (query_size) examples and task masks (E, T)."""
    flat = self.batch(rng, episodes * (support_size + query_size))
    split = lambda x: x.reshape(episodes, support_size + query_size, *x.shape[1:])
    both = {k: split(v) for k, v in flat.items()}
    return MetaBatch(support={k: v[:, :support_size] for k, v in both.items()},
                     query={k: v[:, support_size:] for k, v in both.items()},
                     task_mask=sample_task_masks(rng, episodes, len(self.task_names), task_sampling))
