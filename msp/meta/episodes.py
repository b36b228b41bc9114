"""Episodes: a task subset (0/1 mask) with disjoint support and query batches; a meta-batch is E of them.

Encoding the subset as a mask lets episodes with different subsets share one array layout: the masked loss
sum ignores the tasks an episode does not contain.
"""
import flax.struct
import jax
import numpy as np

TASK_SAMPLING = ("subsets", "all")


@flax.struct.dataclass
class MetaBatch:
  """support / query: dicts with "image" (E, B, H, W, 3) in [0, 1] and one target per task (E, B, ...);
  task_mask: (E, T) float {0, 1}, column t for the t-th seen task in config order."""
  support: dict[str, jax.Array]
  query: dict[str, jax.Array]
  task_mask: jax.Array

  @property
  def num_episodes(self) -> int:
    return self.task_mask.shape[0]

  def episode(self, e: int) -> "MetaBatch":
    """Episode e as a MetaBatch without the leading E axis (task_mask (T,))."""
    return jax.tree.map(lambda x: x[e], self)


def sample_task_masks(rng: np.random.Generator, num_episodes: int, num_tasks: int, mode: str = "subsets") -> np.ndarray:
  """(E, T) float32 masks. `subsets`: each episode a non-empty subset, uniform over the 2^T − 1 subsets;
  `all`: every task in every episode."""
  if mode == "all":
    return np.ones((num_episodes, num_tasks), np.float32)
  if mode != "subsets":
    raise ValueError(f"meta.task_sampling={mode!r}; choose one of {TASK_SAMPLING}")
  codes = rng.integers(1, 2 ** num_tasks, size=num_episodes)
  return ((codes[:, None] >> np.arange(num_tasks)) & 1).astype(np.float32)
