"""Device mesh and shardings (the meta-batch's episode axis over mesh axis `data`, everything else replicated), and
the processes of a multi-host job."""
from msp.parallel.mesh import DATA_AXIS, make_mesh, replicate, shard_episodes
from msp.parallel.processes import (any_process, describe, initialize, is_primary, local, same_everywhere,
                                    sum_over_processes, sync)

__all__ = ["DATA_AXIS", "any_process", "describe", "initialize", "is_primary", "local", "make_mesh", "replicate",
           "same_everywhere", "shard_episodes", "sum_over_processes", "sync"]
