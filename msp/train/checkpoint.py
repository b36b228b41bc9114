"""Checkpoints of a run: the whole MetaTrainState plus the input pipeline's state, and resuming from them.

A run directory `workdir` holds `config.json` (the config of the run) and `checkpoints/<step>/` (orbax V1), each
step with two checkpointables: `state` (the MetaTrainState pytree) and `data_state` (JSON: the input pipeline's
iterator state). Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it when complete, so an
interrupted save never shows up as a checkpoint.

A workdir belongs to one run: reopening it with a config that differs in anything but the keys a resumed run may
change (`resume` in the schema, msp.train.config) raises CheckpointError before anything is written. config.json is written with the first
checkpoint, so that commands that fail earlier, or only read the run, leave the workdir as it was.

A step directory that cannot be read back (a truncated or missing file, a damaged manifest) is corrupt:
`restore_latest_readable` resumes from the newest readable checkpoint, renaming each newer corrupt one to
`<step>.corrupt` (kept for inspection, no longer a checkpoint) with a warning. Corrupt is not incompatible: a
checkpoint that reads back but does not fit the run's state (another config or msp version) is refused with the
list of differing leaves and never set aside, and a workdir whose checkpoints are all unreadable is refused, never
trained again from step 0.

Orbax reports its own failures from background threads and coroutines (tracebacks by the hundred after one bad
file); msp says what happened in one line, so those reports are dropped (`_silence_orbax`).
"""
import base64
import json
import logging as py_logging
import os
import re
import sys
import threading
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from orbax.checkpoint import v1 as ocp

from msp.parallel import is_primary, sync
from msp.train.config import ConfigError, complete, may_differ_on_resume
from msp.train.files import absolute, as_path, error_reason, is_remote, write_text_atomic
from msp.train.state import MetaTrainState

ANY = object()  # a retired key whose every value today's msp reads the same way


def _flops_budget(config: dict) -> bool:
  budget = config.get("budget", {})
  return bool(budget.get("enabled")) and budget.get("target_kind") == "flops_kept"


# Keys that earlier versions of msp wrote into config.json and this one no longer has, each with the value today's msp
# behaves as (ANY: whatever it was; a function: of the old config). A run whose retired keys hold those values is
# read without them, and resumed, evaluated and exported as before; one that set another value ran a variant that
# was retired, and `drop_retired` refuses it by name. `tasks.*.KEY` stands for that option of every task.
RETIRED_KEYS: dict[str, Any] = {
    "safeguards.max_skipped_steps": ANY,  # replaced by max_skipped_fraction over skip_window
    "sparsity.weighting": "sqrt_group_size",
    "sparsity.tie_streams": _flops_budget,
    "sparsity.relative_threshold": _flops_budget,
    "budget.cost_init": _flops_budget,
    "budget.constraint": "at_most",
    "budget.cap_rank": "threshold",
    "budget.scale_lr": 0.02,
    "budget.horizon": 150.0,
    "optim.weight_decay": 0.0,
    "tasks.*.matching": "bsds",
    "tasks.*.tolerance": ANY,  # read by the retired "dilation" matching only
}

_STATE = "state"
_DATA_STATE = "data_state"
# JSON has neither bytes (grain's DataLoader.get_state() returns bytes) nor tuples: they are stored tagged.
_BYTES_TAG = "__bytes_base64__"
_TUPLE_TAG = "__tuple__"


class CheckpointError(ConfigError):
  """A run directory cannot be used: unwritable, written by an incompatible config, or a mismatched checkpoint."""


class CorruptCheckpointError(CheckpointError):
  """A step directory exists but cannot be read back."""


class IncompatibleCheckpointError(CheckpointError):
  """A checkpoint reads back but its leaves do not fit the run's state (another config or version of msp)."""


class RunCheckpointer:
  """Saves and restores a run's checkpoints in `workdir`, after checking that the run may be resumed there.

  Use it as a context manager (or call `close()`): saves run in the background, and a process that exits with one
  in flight loses that checkpoint (its temporary directory is never taken for a checkpoint).

  Example:
    with RunCheckpointer(workdir, config, save_every=100) as ckpt:
      state = learner.init_state(rng)
      data_state = {"step": 0}
      if ckpt.latest_step() is not None:
        state, data_state = ckpt.restore(state)
      ...
      ckpt.save(step, state, data_state)  # every 100 steps
      ckpt.save(num_steps, state, data_state, force=True)  # the final step
  """

  def __init__(self, workdir: str | os.PathLike, config: ml_collections.ConfigDict, *, save_every: int,
               max_to_keep: int = 3, subdirectory: str = "checkpoints"):
    """Checks `workdir` against `config`; creates nothing until the first `save`.

    Args:
      workdir: the run directory.
      config: the run's config.
      save_every: `save` writes a checkpoint at steps that are multiples of this (or when forced).
      max_to_keep: the newest checkpoints kept; older ones are deleted after each save.
      subdirectory: where in `workdir` the step directories live ("checkpoints_best" holds the best one).

    Raises:
      CheckpointError: the workdir cannot be created or written; its config.json differs from `config` in a
        key a resumed run may not change; or it holds checkpoints but no config.json.
    """
    if save_every < 1 or max_to_keep < 1:
      raise ValueError(f"save_every={save_every} and max_to_keep={max_to_keep} must be ≥ 1")
    self.workdir = as_path(absolute(workdir))  # orbax refuses relative paths
    self.config_path = self.workdir / "config.json"
    self.directory = self.workdir / subdirectory
    self._config = json.loads(config.to_json_best_effort(sort_keys=True))
    # the checks only read, so that a refused workdir is left exactly as it was
    if self.config_path.exists():
      _check_compatible(self.config_path, self._config)
    elif self.directory.exists() and any(self.directory.iterdir()):
      raise CheckpointError(f"{self.directory} holds checkpoints but {self.config_path} is missing, so they "
                            f"cannot be checked against the config; use another workdir or remove {self.directory}")
    _check_can_create(self.workdir)
    self._policies = (save_every, max_to_keep)
    self._orbax: ocp.training.Checkpointer | None = None  # opened on first need: opening creates the directory

  @property
  def _checkpointer(self) -> ocp.training.Checkpointer:
    if self._orbax is None:
      _silence_orbax(self.directory)
      registry = ocp.handlers.local_registry()
      registry.add(ocp.handlers.JsonHandler, checkpointable_name=_DATA_STATE)
      context = ocp.Context()
      context.checkpointables.registry = registry
      save_every, max_to_keep = self._policies
      self._orbax = ocp.training.Checkpointer(
          self.directory, context=context,
          save_decision_policy=ocp.training.save_decision_policies.FixedIntervalPolicy(save_every),
          preservation_policy=ocp.training.preservation_policies.LatestN(max_to_keep),
          cleanup_tmp_directories=True)
    return self._orbax

  def __enter__(self) -> "RunCheckpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def save(self, step: int, state: MetaTrainState, data_state: dict, *, force: bool = False) -> bool:
    """Starts saving `state` and `data_state` as the checkpoint of `step`, if `step` is a multiple of save_every.

    The device-to-host copy of `state` is done before returning, so the caller may donate its buffers (the train
    step does) while the write runs in the background; a save waits for the previous one.

    Args:
      step: the number of outer steps taken.
      state: the state after `step` steps.
      data_state: JSON-able dict (str keys; bytes and tuples allowed) that resumes the input pipeline.
      force: save whatever the step, and wait until the checkpoint is committed (for the final step).

    Returns:
      Whether a checkpoint was started: False when the policy skips `step` or a checkpoint of `step` exists
      already (a resumed run that had already reached its last step).
    """
    encoded = _encode(data_state, "data_state")
    # the policy first: _steps() waits for a save in flight, which a skipped step must not do
    if not (force or self._checkpointer.should_save(step)) or step in self._steps():
      return False
    if is_primary():
      _check_writable(self.workdir)
    write_text_atomic(self.config_path, json.dumps(self._config, indent=2, sort_keys=True) + "\n")
    try:
      response = self._checkpointer.save_checkpointables_async(
          step, {_STATE: state, _DATA_STATE: encoded}, force=force)
    except Exception as e:  # an OSError (disk full, permissions) arrives wrapped in orbax's errors
      raise CheckpointError(f"cannot write the checkpoint of step {step} in {self.directory}: {error_reason(e)}") from e
    if response is None:
      return False
    if force:
      self.wait()
    return True

  def due(self, step: int) -> bool:
    """Whether `save` at `step` (unforced) writes a checkpoint, by the save_every policy."""
    return bool(self._checkpointer.should_save(step))

  def latest_step(self) -> int | None:
    """The newest committed checkpoint's step (after waiting for a save in flight), or None if there is none."""
    steps = self._steps()
    return steps[-1] if steps else None

  def restore(self, abstract_state: MetaTrainState, step: int | None = None) -> tuple[MetaTrainState, dict]:
    """Loads the checkpoint of `step` (default: the latest) onto the shapes, dtypes and shardings of a state.

    Args:
      abstract_state: a state of the run's structure whose leaves carry shardings, e.g. `learner.init_state(rng)`
        (the optax NamedTuples come back as such only through this tree).
      step: the checkpoint to load; None for the latest.

    Returns:
      (state, data_state) as saved.

    Raises:
      ValueError: a leaf of `abstract_state` has no sharding (numpy arrays, `jax.eval_shape` results): orbax
        would then place it as it was saved, whatever the current devices.
      CheckpointError: no such checkpoint.
      CorruptCheckpointError: the checkpoint cannot be read back.
      IncompatibleCheckpointError: its leaves differ from `abstract_state`'s (tree, shapes or dtypes).
    """
    if any(getattr(leaf, "sharding", None) is None for leaf in jax.tree.leaves(abstract_state)):
      raise ValueError("every leaf of abstract_state must carry a sharding, as those of learner.init_state(rng) do")
    steps = self._steps()
    if step is None and not steps:
      raise CheckpointError(f"no checkpoint to restore in {self.directory}")
    step = steps[-1] if step is None else step
    if step not in steps:
      raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; there are {steps}")
    path = self.directory / str(step)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state)
    try:
      saved = self._checkpointer.checkpointables_metadata(step).metadata[_STATE]
    except Exception as e:  # orbax raises many kinds; all mean the step directory is unreadable
      raise CorruptCheckpointError(f"the checkpoint {path} is corrupt: {_unreadable_reason(e)}") from e
    _check_same_leaves(path, saved, abstract)
    try:
      loaded = self._checkpointer.load_checkpointables(step, {_STATE: abstract, _DATA_STATE: None})
      data_state = _decode(loaded[_DATA_STATE])
      jax.block_until_ready(loaded[_STATE])
    except Exception as e:
      raise CorruptCheckpointError(f"the checkpoint {path} is corrupt: {_unreadable_reason(e)}") from e
    return loaded[_STATE], data_state

  def restore_latest_readable(self, abstract_state: MetaTrainState) -> tuple[MetaTrainState, dict] | None:
    """`restore` of the newest checkpoint that reads back; None when the run has none (a new run).

    Each newer corrupt one is then renamed to `<step>.corrupt` (kept for inspection; a later save of that step
    writes a fresh checkpoint) with a warning naming it. Nothing is renamed unless a readable checkpoint is found.

    Raises:
      CheckpointError: the run has checkpoints (or set-aside `*.corrupt` ones) but none can be read; nothing is
        changed, so that a run is never started again from step 0 over its own checkpoints.
      IncompatibleCheckpointError: the newest readable checkpoint does not fit the run's state.
    """
    corrupt = []
    for step in reversed(self._steps()):
      try:
        restored = self.restore(abstract_state, step)
      except CorruptCheckpointError as e:
        corrupt.append((step, e))
        continue
      for bad_step, error in corrupt:
        aside = self._set_aside(bad_step)
        logging.warning("%s; set it aside as %s and resumed from step %d", error, aside.name, step)
      return restored
    set_aside = sorted(p.name for p in self.directory.glob("*.corrupt*")) if self.directory.is_dir() else []
    if corrupt or set_aside:
      names = [str(step) for step, _ in corrupt] + set_aside
      reason = f" ({corrupt[0][1]})" if corrupt else ""
      raise CheckpointError(
          f"none of the checkpoints in {self.directory} can be read ({', '.join(names)}){reason}; nothing was "
          f"changed. To start this run again from step 0, move {self.directory} away (or use another workdir)")
    return None

  def _set_aside(self, step: int) -> epath.Path:
    """Renames the step directory of `step` to `<step>.corrupt` (or `<step>.corrupt.<pid>`); returns the new path."""
    path = self.directory / str(step)
    aside = path.with_name(f"{step}.corrupt")
    if aside.exists():
      aside = path.with_name(f"{step}.corrupt.{os.getpid()}")
    if is_primary():
      path.rename(aside)
    sync(f"msp_set_aside_{step}")
    self._checkpointer.reload()
    return aside

  def wait(self) -> None:
    """Blocks until a save in flight is committed (re-raising its error, if any)."""
    if self._orbax is not None:
      try:
        self._orbax.wait()
      except Exception as e:  # the background write failed: disk full, permissions, ...
        raise CheckpointError(f"cannot write a checkpoint in {self.directory}: {error_reason(e)}") from e

  def close(self) -> None:
    """Waits for a save in flight and releases orbax's resources (CheckpointError if that save failed)."""
    if self._orbax is not None:
      try:
        self._orbax.close()
      except Exception as e:
        raise CheckpointError(f"cannot write a checkpoint in {self.directory}: {error_reason(e)}") from e

  def _steps(self) -> list[int]:
    if self._orbax is None and not self.directory.is_dir():
      return []
    # orbax lists a step as soon as its save starts: wait so that only committed steps count
    self.wait()
    return [c.step for c in self._checkpointer.checkpoints]


_ORBAX_FRAME = re.compile(r"[\\/](orbax|tensorstore)[\\/]")
# The checkpoint directories this process reads and writes through orbax: a report that names one of them (a
# tensorstore error from a task orbax started) is about a failure msp reports itself.
_ORBAX_DIRECTORIES: set[str] = set()


def _from_orbax(error: BaseException | None) -> bool:
  """Whether `error` was raised in (or passed through) orbax's or tensorstore's Python code, or names one of
  _ORBAX_DIRECTORIES."""
  while error is not None:
    if _names_orbax_directory(str(error)):
      return True
    tb = error.__traceback__
    while tb is not None:
      if _ORBAX_FRAME.search(tb.tb_frame.f_code.co_filename):
        return True
      tb = tb.tb_next
    error = error.__cause__ or error.__context__
  return False


def _names_orbax_directory(text: str) -> bool:
  return bool(_ORBAX_FRAME.search(text)) or any(directory in text for directory in _ORBAX_DIRECTORIES)


class _DropOrbaxRecords(py_logging.Filter):
  """Drops log records written by orbax's code, and asyncio's reports of orbax tasks that failed."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.pathname == __file__:  # msp's own warnings name the directory too
      return True
    if _ORBAX_FRAME.search(record.pathname or ""):
      return False
    exc = record.exc_info[1] if record.exc_info else None
    text = " ".join([str(getattr(record, "msg", "")), *map(str, record.args or ())])
    return not (_from_orbax(exc) or _names_orbax_directory(text))


def _silence_orbax(directory: epath.Path) -> None:
  """From now on, in this process: orbax's log records (absl), its failed threads' and coroutines' tracebacks
  (threading.excepthook, sys.unraisablehook, asyncio's "exception was never retrieved"), and any of those that
  name `directory` (a checkpoint directory msp reads or writes through orbax) are dropped.

  Every orbax failure that matters reaches msp as an exception from save, wait or restore, which msp reports in
  one line; the same failure would otherwise also print up to thousands of lines, from threads that outlive the
  call (at any moment, also after msp's line). Installed once; other threads' and coroutines' errors are reported
  as before."""
  _ORBAX_DIRECTORIES.add(str(directory))
  if getattr(threading.excepthook, "drops_orbax", False):
    return
  thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

  def excepthook(args):
    if not _from_orbax(args.exc_value):
      thread_hook(args)

  def unraisablehook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    closed_loop = isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"
    if not (closed_loop or _from_orbax(unraisable.exc_value) or
            (code is not None and _ORBAX_FRAME.search(code.co_filename))):
      unraisable_hook(unraisable)

  excepthook.drops_orbax = True
  threading.excepthook, sys.unraisablehook = excepthook, unraisablehook
  for name in ("absl", "asyncio"):
    logger = py_logging.getLogger(name)
    if not any(isinstance(f, _DropOrbaxRecords) for f in logger.filters):
      logger.addFilter(_DropOrbaxRecords())


_ARRAY_IN_ERROR = re.compile(r'in "([\w.]+)/c/')


def _unreadable_reason(error: Exception) -> str:
  """Why a checkpoint could not be read, in a line: the array whose data is damaged or missing where orbax's
  innermost error names it (`params.head.conv.kernel`), else that error's first line."""
  innermost = error
  while (innermost.__cause__ or innermost.__context__) is not None:
    innermost = innermost.__cause__ or innermost.__context__
  if match := _ARRAY_IN_ERROR.search(str(innermost)):
    status = re.match(r"([A-Z_]+):", str(innermost))
    return (f"the data of {match[1].replace('.', '/')} cannot be read (a data file is truncated, missing or "
            f"damaged{'; ' + status[1] if status else ''})")
  return error_reason(innermost)


def _check_can_create(workdir: epath.Path) -> None:
  """CheckpointError unless `workdir` is a writable directory, or could be created as one; creates nothing. (A
  bucket's permissions show only at the first write, `_check_writable`.)"""
  if is_remote(workdir):
    return
  existing = workdir
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise CheckpointError(f"the run directory {workdir} cannot be created: {existing} is not a directory")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise CheckpointError(f"the run directory {workdir} cannot be created or written: {existing} is not writable")


def _check_writable(workdir: epath.Path) -> None:
  """Creates `workdir` (and missing parents) if needed and writes and removes a file in it."""
  probe = workdir / f".write_test.{os.getpid()}"
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise CheckpointError(f"the run directory {workdir} cannot be created or written: {e}") from e


def _check_compatible(config_path: epath.Path, new: dict) -> None:
  """Raises CheckpointError listing every key a resumed run may not change whose value differs."""
  try:
    old = json.loads(config_path.read_text())
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read the run's config {config_path}: {e}") from e
  old, new = _flatten(complete(drop_retired(old, str(config_path)))), _flatten(new)
  missing = "<absent>"
  same = lambda a, b: json.dumps(a) == json.dumps(b)  # NaN == NaN here, as in the file
  diffs = [f"  {key}: {old.get(key, missing)!r} → {new.get(key, missing)!r}"
           for key in sorted(old.keys() | new.keys())
           if not same(old.get(key, missing), new.get(key, missing)) and not may_differ_on_resume(key)]
  if diffs:
    raise CheckpointError(
        f"the config differs from the one this run was started with ({config_path}) in keys that define the "
        f"state, so the run cannot be resumed (old → new):\n" + "\n".join(diffs) +
        "\nUse another workdir, or restore these values.")


def drop_retired(config: dict, source: str) -> dict:
  """`config` (a run's config.json as nested dicts, read from `source`) without its RETIRED_KEYS, removed in place;
  CheckpointError naming the key when one holds a value other than the one today's msp behaves as."""
  for key, today in RETIRED_KEYS.items():
    section, *rest = key.split(".")
    nodes = [config]
    if section == "tasks" and rest[0] == "*":
      nodes = [node for node in config.get("tasks", {}).values() if isinstance(node, dict)]
      rest = rest[1:]
    else:
      rest = [section, *rest]
    *parents, leaf = rest
    for node in nodes:
      for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
      if not isinstance(node, dict) or leaf not in node:
        continue
      value = node.pop(leaf)
      expected = today(config) if callable(today) else today
      if today is not ANY and value != expected:
        raise CheckpointError(f"{source} sets {key.replace('*', '…')}={value!r}, a variant this version of msp no "
                              f"longer has (it behaves as {expected!r}); use the msp commit that made the run")
  return config


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} → {"a.b": 1}; empty dicts are values."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _encode(value: Any, where: str) -> Any:
  """`value` as JSON (bytes and tuples tagged); CheckpointError naming the first part JSON cannot store."""
  if isinstance(value, bytes):
    return {_BYTES_TAG: base64.b64encode(value).decode("ascii")}
  if isinstance(value, tuple):
    return {_TUPLE_TAG: [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
  if isinstance(value, list):
    return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, dict):
    for key in value:
      if not isinstance(key, str):
        raise CheckpointError(f"{where} has the key {key!r}: only str keys survive JSON")
    return {key: _encode(v, f"{where}[{key!r}]") for key, v in value.items()}
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise CheckpointError(f"{where} is a {type(value).__name__}, which a checkpoint's JSON cannot store")


def _decode(value: Any) -> Any:
  """Inverse of `_encode`."""
  if isinstance(value, list):
    return [_decode(v) for v in value]
  if isinstance(value, dict):
    if value.keys() == {_BYTES_TAG}:
      return base64.b64decode(value[_BYTES_TAG])
    if value.keys() == {_TUPLE_TAG}:
      return tuple(_decode(v) for v in value[_TUPLE_TAG])
    return {key: _decode(v) for key, v in value.items()}
  return value


def _key_name(key) -> str:
  """The name in a path of a DictKey, GetAttrKey, SequenceKey or FlattenedIndexKey."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{"params/backbone/.../kernel": (shape, dtype)}, naming attributes, dict keys and indices alike: a state and
  orbax's metadata of it (nested dicts and lists) give the same paths."""
  return {"/".join(_key_name(k) for k in path): (tuple(leaf.shape), np.dtype(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_same_leaves(path: epath.Path, saved: Any, abstract: Any, listed: int = 8) -> None:
  """CorruptCheckpointError when the checkpoint lists no arrays (a damaged manifest or metadata file); else
  IncompatibleCheckpointError listing (up to `listed` of) the leaves missing, extra, or of another shape or dtype."""
  saved, wanted = _leaf_specs(saved), _leaf_specs(abstract)
  if not saved:
    raise CorruptCheckpointError(f"the checkpoint {path} is corrupt: its state lists no arrays (a damaged or "
                                 f"missing manifest or metadata file)")
  show = lambda spec: f"{spec[0]} {spec[1]}"
  diffs = []
  for key in [*wanted, *(k for k in saved if k not in wanted)]:  # in the state's order: parameters first
    if key not in saved:
      diffs.append(f"{key}: missing from the checkpoint (the run expects {show(wanted[key])})")
    elif key not in wanted:
      diffs.append(f"{key}: in the checkpoint ({show(saved[key])}) but not in the run's state")
    elif saved[key] != wanted[key]:
      diffs.append(f"{key}: checkpoint {show(saved[key])}, run {show(wanted[key])}")
  if diffs:
    more = f"; and {len(diffs) - listed} more" if len(diffs) > listed else ""
    raise IncompatibleCheckpointError(
        f"the checkpoint {path} does not fit this run's state (a config.json edited by hand, or a checkpoint of "
        f"another version of msp), so it is neither resumed nor set aside; {len(diffs)} leaves differ: "
        + "; ".join(diffs[:listed]) + more + ". Restore the run's config, or use another workdir")
