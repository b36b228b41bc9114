"""RunCheckpointer: bitwise save/restore of the whole state and the data state, pruning, and refusing to resume."""
import copy
import logging
import os
import sys
import threading
import types

import grain
import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from data_pipelines.teacher_student import TeacherStudent
from experiments.configs import teacher_student
from msp.parallel import shard_episodes
from msp.train import ConfigError, build_meta_learner
from msp.train.checkpoint import CheckpointError, IncompatibleCheckpointError, RunCheckpointer, drop_retired


def _config():
  config = teacher_student.get_config("tiny")
  config.meta.mode = "first_order"  # the quickest step to compile; checkpoints do not depend on the mode
  return config


@pytest.fixture(scope="module")
def run():
  """The tiny learner, a host copy of its state after two train steps, and a source of meta-batches."""
  config = _config()
  learner = build_meta_learner(config)
  data = TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size,
                        config.teacher.alive_per_layer, seed=config.teacher.seed)
  rng = np.random.default_rng(0)
  m = config.meta
  batch = lambda: shard_episodes(data.meta_batch(rng, m.episodes, m.support_size, m.query_size), learner.mesh)
  state = learner.init_state(jax.random.key(0))
  for _ in range(2):
    state, _ = learner.train_step(state, batch())
  return learner, jax.tree.map(np.array, state), batch


def _grain_states():
  """A dataset iterator's state (dict) and a DataLoader's (bytes), each after two elements."""
  it = iter(grain.MapDataset.range(10).shuffle(seed=0).batch(2))
  loader = iter(_loader())
  for _ in range(2):
    next(it), next(loader)
  return {"dataset": it.get_state(), "loader": loader.get_state()}


def _loader():
  return grain.DataLoader(data_source=grain.sources.RangeDataSource(0, 10, 1),
                          sampler=grain.samplers.IndexSampler(10, shuffle=True, seed=0, num_epochs=1),
                          worker_count=0)


def _snapshot(root):
  """Every path under `root` with its size and mtime (directories included)."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      st = os.stat(path)
      out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
  st = os.stat(root)
  out["."] = (st.st_size, st.st_mtime_ns)
  return out


def _fresh(learner, host_state):
  """A device copy of a host state (the train step donates its input)."""
  return jax.device_put(host_state, NamedSharding(learner.mesh, P()))


def test_save_restore_is_bitwise_and_the_train_step_accepts_the_result(run, tmp_path):
  learner, host, batch = run
  data_state = {**_grain_states(), "step": 2, "seed": 0, "order": (3, "a", None), "nested": [{"x": 1.5}]}
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    assert ckpt.save(2, _fresh(learner, host), data_state)
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    assert ckpt.latest_step() == 2
    state, restored_data = ckpt.restore(learner.init_state(jax.random.key(1)))
  assert restored_data == data_state
  assert isinstance(restored_data["loader"], bytes) and isinstance(restored_data["order"], tuple)
  # a learner's states share its (static) optimisers, so the jitted step is not compiled again
  assert state.tx is host.tx and state.rho_tx is host.rho_tx
  # same tree (optax NamedTuples included) and bitwise-equal leaves
  assert jax.tree.structure(state) == jax.tree.structure(host)
  assert isinstance(state.opt_state[0], optax.TraceState) and isinstance(state.rho_opt_state[0], optax.ScaleByAdamState)
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(host)):
    assert got.dtype == want.dtype and np.array_equal(np.asarray(got), want)
    assert got.sharding == NamedSharding(learner.mesh, P())
  assert int(state.step) == 2
  # the restored data state resumes the loader where it stopped
  loader = iter(_loader())
  loader.set_state(restored_data["loader"])
  reference = iter(_loader())
  for _ in range(2):
    next(reference)
  assert [next(loader) for _ in range(3)] == [next(reference) for _ in range(3)]
  # the (donating) train step takes the restored state and computes what it computes on the original
  b = batch()
  after_restore, _ = learner.train_step(state, b)
  after_original, _ = learner.train_step(_fresh(learner, host), b)
  for got, want in zip(jax.tree.leaves(after_restore), jax.tree.leaves(after_original)):
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_policy_latest_step_and_pruning(run, tmp_path):
  learner, host, _ = run
  state = _fresh(learner, host)
  with RunCheckpointer(tmp_path, _config(), save_every=2, max_to_keep=2) as ckpt:
    assert ckpt.latest_step() is None
    saved = [ckpt.save(step, state, {"step": step}) for step in range(1, 8)]
    assert saved == [False, True, False, True, False, True, False]
    assert ckpt.save(7, state, {"step": 7}, force=True)
    assert ckpt.latest_step() == 7
    # a resumed run already at its last step saves nothing new
    assert not ckpt.save(7, state, {"step": 7}, force=True)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["6", "7"]
  with RunCheckpointer(tmp_path, _config(), save_every=2) as ckpt:
    assert ckpt.latest_step() == 7
    assert ckpt.restore(learner.init_state(jax.random.key(1)))[1] == {"step": 7}
    assert ckpt.restore(learner.init_state(jax.random.key(1)), step=6)[1] == {"step": 6}


def test_save_in_flight_survives_the_donating_train_step(run, tmp_path):
  learner, host, batch = run
  state = _fresh(learner, host)
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    assert ckpt.save(3, state, {"step": 3})
    learner.train_step(state, batch())  # donates `state` while the write may still run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    restored, _ = ckpt.restore(learner.init_state(jax.random.key(1)))
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(host)):
    assert np.array_equal(np.asarray(got), want)


def test_structural_config_change_is_refused_and_touches_nothing(run, tmp_path):
  learner, host, _ = run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    ckpt.save(1, _fresh(learner, host), {"step": 1})
  before = _snapshot(tmp_path)
  config = _config()
  config.model.backbone.widths = (16, 8)
  config.sparsity.lambda_mode = "global"
  with pytest.raises(CheckpointError) as error:
    RunCheckpointer(tmp_path, config, save_every=1)
  message = str(error.value)
  assert str(tmp_path / "config.json") in message
  assert "model.backbone.widths: [8, 8] → [16, 8]" in message
  assert "sparsity.lambda_mode: 'per_layer' → 'global'" in message
  assert isinstance(error.value, ConfigError)
  assert _snapshot(tmp_path) == before


def test_raising_steps_resumes(run, tmp_path):
  learner, host, _ = run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    ckpt.save(3, _fresh(learner, host), {"step": 3})
  config = _config()
  config.steps, config.log_every = 30, 10
  with RunCheckpointer(tmp_path, config, save_every=1) as ckpt:
    assert ckpt.latest_step() == 3
    assert int(ckpt.restore(learner.init_state(jax.random.key(1)))[0].step) == 2
    assert '"steps": 30' not in (tmp_path / "config.json").read_text()  # opening writes nothing
    ckpt.save(4, _fresh(learner, host), {"step": 4})
  assert '"steps": 30' in (tmp_path / "config.json").read_text()  # the run's length as of its newest checkpoint


def test_checkpoints_without_config_json_are_refused(run, tmp_path):
  learner, host, _ = run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    ckpt.save(1, _fresh(learner, host), {"step": 1})
  (tmp_path / "config.json").unlink()
  with pytest.raises(CheckpointError, match="config.json is missing"):
    RunCheckpointer(tmp_path, _config(), save_every=1)
  assert not (tmp_path / "config.json").exists()


def test_unwritable_workdir_is_refused_and_missing_parents_are_created_by_the_first_save(run, tmp_path):
  learner, host, _ = run
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  for workdir in (blocker / "run", blocker):
    with pytest.raises(CheckpointError, match=str(workdir)):
      RunCheckpointer(workdir, _config(), save_every=1)
  assert sorted(os.listdir(tmp_path)) == ["a_file"]
  with RunCheckpointer(tmp_path / "new" / "run", _config(), save_every=1) as ckpt:
    assert ckpt.latest_step() is None and not (tmp_path / "new").exists()
    ckpt.save(1, _fresh(learner, host), {"step": 1})
  assert (tmp_path / "new" / "run" / "config.json").exists()


def test_relative_workdir(run, tmp_path, monkeypatch):
  learner, host, _ = run
  monkeypatch.chdir(tmp_path)
  with RunCheckpointer("runs/relative", _config(), save_every=1) as ckpt:
    assert ckpt.save(1, _fresh(learner, host), {"step": 1}, force=True)
    assert ckpt.latest_step() == 1
  assert (tmp_path / "runs" / "relative" / "checkpoints" / "1").is_dir()


def test_interrupted_save_is_not_a_checkpoint(run, tmp_path):
  learner, host, _ = run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    ckpt.save(1, _fresh(learner, host), {"step": 1})
  # what a process killed while writing step 9 leaves behind (orbax's temporary name, renamed when complete)
  leftover = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp"
  leftover.mkdir(parents=True)
  (leftover / "partial").write_bytes(b"\0" * 10)
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    assert ckpt.latest_step() == 1
    assert ckpt.restore(learner.init_state(jax.random.key(1)))[1] == {"step": 1}
    assert ckpt.save(5, _fresh(learner, host), {"step": 5})
    assert ckpt.latest_step() == 5
  # opening the run started removing the leftover in the background; a save waits for that
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "5"]


def test_restoring_into_another_structure_names_the_checkpoint(run, tmp_path):
  learner, host, _ = run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    ckpt.save(1, _fresh(learner, host), {"step": 1})
    config = _config()
    config.model.backbone.widths = (16, 8)
    wider = jax.eval_shape(build_meta_learner(config).init_state, jax.random.key(0))
    with pytest.raises(ValueError, match="sharding"):
      ckpt.restore(wider)  # eval_shape drops the shardings
    replicated = NamedSharding(learner.mesh, P())
    wider = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), wider)
    with pytest.raises(IncompatibleCheckpointError) as error:
      ckpt.restore(wider)
  message = str(error.value)
  assert str(tmp_path / "checkpoints" / "1") in message and "does not fit this run's state" in message
  assert "\n" not in message and "batch_stats/backbone/stage1_block0/conv1/norm/mean: checkpoint (8,) float32, " \
      "run (16,) float32" in message


def test_data_state_that_json_cannot_store_is_refused_before_writing(run, tmp_path):
  learner, host, _ = run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    with pytest.raises(CheckpointError, match=r"data_state\['step'\] is a int64"):
      ckpt.save(1, _fresh(learner, host), {"step": np.int64(1)})
    with pytest.raises(CheckpointError, match="key 0"):
      ckpt.save(1, _fresh(learner, host), {0: 1})
    assert ckpt.latest_step() is None


def test_metric_options_of_tasks_may_change_but_their_kind_may_not(run, tmp_path):
  """How a task is scored (tasks.<name>.max_dist, zero_division, ...) defines no state; what it is does."""
  learner, host, _ = run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    ckpt.save(1, _fresh(learner, host), {"step": 1})
  task = sorted(_config().tasks)[0]
  config = _config()
  config.tasks[task].thresholds = 49
  config.tasks[task].zero_division = 1.0
  with RunCheckpointer(tmp_path, config, save_every=1) as ckpt:
    assert ckpt.latest_step() == 1
  config.tasks[task].kind = "depth"
  with pytest.raises(CheckpointError, match=f"tasks.{task}.kind"):
    RunCheckpointer(tmp_path, config, save_every=1)


def _raised_in(filename: str) -> Exception:
  """An exception whose traceback runs through code compiled as `filename`."""
  try:
    exec(compile("raise ValueError('damaged read')", filename, "exec"))  # pylint: disable=exec-used
  except ValueError as e:
    return e
  raise AssertionError("unreachable")


def test_once_orbax_is_opened_its_background_failures_are_dropped_and_no_others(run, tmp_path, monkeypatch):
  """Orbax's reader and writer threads and coroutines report a failure that msp reports in one line by hundreds of
  tracebacks (thread hook, unraisable hook, asyncio and absl loggers); those, and only those, are dropped."""
  seen_threads, seen_unraisable = [], []
  monkeypatch.setattr(threading, "excepthook", seen_threads.append)
  monkeypatch.setattr(sys, "unraisablehook", seen_unraisable.append)
  learner, host, _ = run
  with RunCheckpointer(tmp_path, _config(), save_every=1) as ckpt:
    ckpt.save(2, _fresh(learner, host), {"step": 2})
  orbax_error = _raised_in(os.path.join("site-packages", "orbax", "checkpoint", "serialization.py"))
  other_error = _raised_in(os.path.join("site-packages", "mylib", "io.py"))
  closed_loop, something_else = RuntimeError("Event loop is closed"), RuntimeError("something else")
  for error in (orbax_error, other_error):
    threading.excepthook(types.SimpleNamespace(exc_value=error))
  for error in (orbax_error, other_error, closed_loop, something_else):
    sys.unraisablehook(types.SimpleNamespace(exc_value=error, object=None))
  assert [a.exc_value for a in seen_threads] == [other_error]
  assert [u.exc_value for u in seen_unraisable] == [other_error, something_else]

  records = []
  handler = logging.Handler()
  handler.emit = records.append
  absl_logger = logging.getLogger("absl")
  absl_logger.addHandler(handler)
  try:
    for path in ("/x/site-packages/orbax/checkpoint/_src/x.py", "/x/site-packages/mylib/x.py"):
      absl_logger.handle(logging.LogRecord("absl", logging.ERROR, path, 1, "failed", (), None))
  finally:
    absl_logger.removeHandler(handler)
  assert [r.pathname for r in records] == ["/x/site-packages/mylib/x.py"]




def test_retired_keys_are_dropped_at_todays_values_and_their_other_values_refused():
  flops = {"budget": {"enabled": True, "target_kind": "flops_kept", "cost_init": True, "constraint": "at_most"},
           "sparsity": {"tie_streams": True, "relative_threshold": True, "weighting": "sqrt_group_size"},
           "tasks": {"edges": {"kind": "edges", "matching": "bsds", "tolerance": 3}},
           "safeguards": {"max_skipped_steps": 7, "min_channels": 1}}
  assert drop_retired(copy.deepcopy(flops), "config.json") == {
      "budget": {"enabled": True, "target_kind": "flops_kept"}, "sparsity": {},
      "tasks": {"edges": {"kind": "edges"}}, "safeguards": {"min_channels": 1}}
  refused = [("sparsity", "tie_streams", False), ("budget", "cost_init", False), ("budget", "constraint", "equal"),
             ("sparsity", "weighting", "unweighted")]
  for section, key, value in refused:
    retired_variant = copy.deepcopy(flops)
    retired_variant[section][key] = value
    with pytest.raises(CheckpointError, match=rf"^run/config.json sets {section}.{key}={value!r}, a variant this "
                                              r"version of msp no longer has"):
      drop_retired(retired_variant, "run/config.json")
  dilation = copy.deepcopy(flops)
  dilation["tasks"]["edges"]["matching"] = "dilation"
  with pytest.raises(CheckpointError, match=r"sets tasks.….matching='dilation'"):
    drop_retired(dilation, "run/config.json")
  per_conv = {"budget": {"enabled": True, "target_kind": "channels_removed"}, "sparsity": {"tie_streams": False}}
  assert drop_retired(per_conv, "config.json") == {"budget": {"enabled": True, "target_kind": "channels_removed"},
                                                   "sparsity": {}}
