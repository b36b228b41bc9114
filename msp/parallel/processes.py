"""One job over several processes (hosts): starting JAX's distributed runtime, and what each process does alone.

A multi-process job runs the same command in every process. The meta-batch is sharded over every device of every
process (`msp.parallel.mesh`); evaluation and adaptation run in each process on its own first device, on a copy of
the replicated state (`local`), and pool the per-process metric states with `sum_over_processes`. Process 0
(`is_primary`) writes the run's files; orbax coordinates the checkpoint writes of all processes itself.

The runtime starts (`initialize`) when asked for, or when the environment says that the job spans several
processes: JAX_COORDINATOR_ADDRESS is set (with JAX_NUM_PROCESSES and JAX_PROCESS_ID, or values JAX detects), a SLURM
step has several tasks, or the process runs on a Cloud TPU VM (where JAX finds the pod's workers itself).
"""
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

MODES = ("auto", "on", "off")


def wanted(mode: str, environ=os.environ) -> bool:
  """Whether `initialize(mode)` starts the distributed runtime, given the environment `environ`."""
  if mode not in MODES:
    raise ValueError(f"--distributed={mode!r}; choose one of {MODES}")
  if mode != "auto":
    return mode == "on"
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  if int(environ.get("SLURM_STEP_NUM_TASKS", environ.get("SLURM_NTASKS", "1")) or 1) > 1:
    return True
  return _on_cloud_tpu_vm()


def _on_cloud_tpu_vm() -> bool:
  # JAX's own flag for this (cloud_tpu_init.running_in_cloud_tpu_vm) is set only once a backend starts, which must
  # not happen before the runtime does; JAX sets it from the same PCI scan.
  from jax._src import hardware_utils  # pylint: disable=import-outside-toplevel
  return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0


def initialize(mode: str = "auto", environ=os.environ) -> bool:
  """Starts JAX's distributed runtime if `wanted(mode)`; returns whether it did. Call before any other JAX use.

  The coordinator comes from JAX_COORDINATOR_ADDRESS (host:port of process 0), the process count and this process's
  index from JAX_NUM_PROCESSES and JAX_PROCESS_ID; what is not set, JAX detects (SLURM, Cloud TPU, Kubernetes,
  Open MPI). CPU processes exchange collectives through gloo.
  """
  if not wanted(mode, environ):
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  number = lambda name: int(environ[name]) if environ.get(name) else None
  jax.distributed.initialize(environ.get("JAX_COORDINATOR_ADDRESS") or None,
                             num_processes=number("JAX_NUM_PROCESSES"), process_id=number("JAX_PROCESS_ID"))
  return True


def describe() -> str:
  """One line: this process's index, the process count, and the devices (kind, local and global count)."""
  local = jax.local_devices()
  kind = local[0].device_kind if local else "none"
  return (f"process {jax.process_index()} of {jax.process_count()}: {len(local)} local {local[0].platform} "
          f"device(s) ({kind}), {jax.device_count()} in the job")


def is_primary() -> bool:
  """Whether this process writes the job's files (process 0)."""
  return jax.process_index() == 0


def local(tree):
  """Each leaf that spans processes (a replicated global jax.Array) → this process's copy on its first device;
  other leaves unchanged. For work a process does alone on state that is the same in every process."""
  def copy(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      if not leaf.is_fully_replicated:
        raise ValueError(f"a leaf of shape {leaf.shape} is sharded over processes, not replicated; gather it first")
      return leaf.addressable_data(0)
    return leaf
  return jax.tree.map(copy, tree)


def sum_over_processes(tree):
  """Element-wise sum over processes of a tree of arrays of equal shapes in every process → numpy (integers as
  int64, floats as float64); the tree itself, as numpy, with one process. Every process must call it."""
  widen = lambda x: np.asarray(x, np.int64 if np.issubdtype(np.asarray(x).dtype, np.integer) else np.float64)
  tree = jax.device_get(tree)
  if jax.process_count() == 1:
    return jax.tree.map(widen, tree)
  gathered = multihost_utils.process_allgather(tree)  # each leaf gets a leading process axis, in its own dtype
  return jax.tree.map(lambda x: widen(x).sum(axis=0), gathered)


def any_process(flag: bool) -> bool:
  """Whether `flag` is true in any process of the job (e.g. a stop request that reached some hosts only); every
  process must call it."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def same_everywhere(value: np.ndarray) -> np.ndarray:
  """Process 0's `value` (a numpy array or scalar of the same shape and dtype in every process) in every process;
  every process must call it."""
  if jax.process_count() == 1:
    return value
  return multihost_utils.broadcast_one_to_all(value)


def sync(name: str) -> None:
  """Waits until every process has reached the point named `name` (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
