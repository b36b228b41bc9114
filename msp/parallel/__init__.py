"""Device mesh and shardings: the meta-batch's episode axis over mesh axis `data`, everything else replicated."""
from msp.parallel.mesh import DATA_AXIS, make_mesh, replicate, shard_episodes

__all__ = ["DATA_AXIS", "make_mesh", "replicate", "shard_episodes"]
