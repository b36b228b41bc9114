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
  """Places every leaf of `tree` on every device of `mesh`. With several processes, each passes the same values
  (its own copy), which become one global array."""
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), tree)


def shard_episodes(tree, mesh: Mesh):
  """This process's meta-batch → the global meta-batch, its leading (episode) axis split over `data`.

  Every leaf has E_local episodes on its leading axis: the episodes this process drew (its data shard). The global
  array holds the processes' episodes in process order, E_local · process_count in all; with one process it is the
  input itself. E_local must be a multiple of the process's devices in the mesh.
  """
  local_size = mesh.local_mesh.shape[DATA_AXIS]
  for leaf in jax.tree.leaves(tree):
    if leaf.shape[0] % local_size:
      raise ValueError(f"this process's {leaf.shape[0]} episodes cannot be split over its {local_size} devices; "
                       f"make meta.episodes a multiple of {mesh.shape[DATA_AXIS]}")
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), tree)
