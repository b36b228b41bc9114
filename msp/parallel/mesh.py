"""One mesh axis, `data`, over which the episodes of a meta-batch are split; parameters are replicated."""
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (all when None), axis name `data`."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"num_devices={num_devices}, but {len(devices)} device(s) are available")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` on every device of `mesh`."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_episodes(tree, mesh: Mesh):
  """Splits the leading (episode) axis of every leaf over `data`; E must be divisible by the mesh size."""
  size = mesh.shape[DATA_AXIS]
  for leaf in jax.tree.leaves(tree):
    if leaf.shape[0] % size:
      raise ValueError(f"meta-batch of {leaf.shape[0]} episodes cannot be split over {size} devices; "
                       f"make meta.episodes a multiple of {size}")
  return jax.device_put(tree, NamedSharding(mesh, P(DATA_AXIS)))
