"""A workdir survives real use: refused relabelling, corrupt and incompatible checkpoints, NaN, skipped steps,
failed writes, exports that would land on a run, signals, resumed logs, the best checkpoint, and what a training
loop records (experiments/run/training.py, msp/train/{checkpoint,loop,writer,files}.py)."""
import errno
import io
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorboardX.record_writer

from experiments.run.deployment import check_out, export_run
from experiments.run.training import meta_batches, open_run, train
from msp.train.checkpoint import CheckpointError, CorruptCheckpointError, IncompatibleCheckpointError
from msp.train.config import ConfigError
from msp.train.evaluation import write_results
from msp.train.files import WriteError
from msp.train.loop import meta_train
from msp.train.safeguards import DivergedError
from msp.train.writer import MetricWriter, read_jsonl
from tests import run_fixtures as rf

STEPS = 6


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """(config, workdir): 6 uninterrupted steps, a checkpoint after every step, all kept."""
  config = rf.tiny_config(data_dir, steps=STEPS, checkpoint_every=1, keep_checkpoints=STEPS, log_every=1)
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  train(config, workdir, progress=False)
  return config, workdir


@pytest.fixture(scope="module")
def opened(data_dir, tmp_path_factory):
  """(config, run) of a tiny run that is opened but never trained (its jitted step compiles once for the module)."""
  config = rf.tiny_config(data_dir, **{"safeguards.skip_window": 4})
  run = open_run(config, str(tmp_path_factory.mktemp("opened") / "run"))
  yield config, run
  run.close()


def test_a_shorter_run_is_refused_and_changes_nothing(reference):
  config, workdir = reference
  before = rf.snapshot(workdir)
  with pytest.raises(CheckpointError, match=f"already holds step {STEPS}, past config.steps=3"):
    train(rf.with_overrides(config, steps=3), workdir, progress=False)
  assert rf.snapshot(workdir) == before


def _damage(step_dir: str, how: str) -> None:
  state_dir = os.path.join(step_dir, "state")
  if how == "truncated data file":
    data_files = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs if os.sep + "d" + os.sep in
                  os.path.join(d, f)]
    target = max(data_files, key=os.path.getsize)
    with open(target, "r+b") as f:
      f.truncate(os.path.getsize(target) // 2)
  elif how == "garbage manifest":
    with open(os.path.join(state_dir, "manifest.ocdbt"), "wb") as f:
      f.write(b"\x00not a manifest\xff" * 8)
  elif how == "deleted metadata":
    os.remove(os.path.join(state_dir, "_METADATA"))
  else:
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated data file", pytest.param("garbage manifest", marks=pytest.mark.slow),
                                 pytest.param("deleted metadata", marks=pytest.mark.slow)])
def test_a_corrupt_latest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(reference, tmp_path,
                                                                                           how, caplog):
  config, workdir = reference
  run_dir = rf.copy_run(workdir, str(tmp_path / "run"))
  _damage(os.path.join(run_dir, "checkpoints", str(STEPS)), how)
  with pytest.raises(CorruptCheckpointError, match=f"checkpoints/{STEPS} is corrupt: ") as error:
    rf.state_leaves(config, run_dir, STEPS)
  assert "\n" not in str(error.value) and "does not fit" not in str(error.value)
  with caplog.at_level(logging.WARNING):
    train(config, run_dir, progress=False)
  warnings = [r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage()]
  assert len(warnings) == 1 and f"checkpoints/{STEPS} is corrupt" in warnings[0]
  assert f"set it aside as {STEPS}.corrupt and resumed from step {STEPS - 1}" in warnings[0]
  assert os.path.isdir(os.path.join(run_dir, "checkpoints", f"{STEPS}.corrupt"))  # kept for inspection
  rf.assert_bitwise_equal(rf.state_leaves(config, run_dir), rf.state_leaves(config, workdir))
  assert rf.jsonl_steps(run_dir) == list(range(1, STEPS + 1))


def test_resumed_logs_hold_each_step_once_in_metrics_and_tensorboard(reference, tmp_path):
  config, workdir = reference
  run_dir = rf.copy_run(workdir, str(tmp_path / "run"))
  for step in range(3, STEPS + 1):  # as if killed after step 6 had been logged but only 2 checkpointed
    shutil.rmtree(os.path.join(run_dir, "checkpoints", str(step)))
  assert rf.jsonl_steps(run_dir) == list(range(1, STEPS + 1))
  for _ in range(2):  # resumed twice (keeping 2 checkpoints now): the second finds the run finished
    train(rf.with_overrides(config, keep_checkpoints=2), run_dir, progress=False)
  assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [str(STEPS - 1), str(STEPS)]
  assert rf.jsonl_steps(run_dir) == list(range(1, STEPS + 1))
  resumed, uninterrupted = rf.tensorboard_scalars(run_dir, "loss"), rf.tensorboard_scalars(workdir, "loss")
  assert [s for s, _ in resumed] == list(range(1, STEPS + 1))
  assert resumed == uninterrupted  # the recomputed steps log the same values


def test_a_non_finite_state_stops_the_loop_before_it_is_saved(opened):
  config, run = opened
  state = run.fresh_state()
  poisoned = state.replace(batch_stats=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf), state.batch_stats))
  saved = []
  with pytest.raises(DivergedError, match=r"^step 1: the BatchNorm statistics became NaN or inf"):
    meta_train(run.learner, poisoned, meta_batches(config, run.dataset, 0), 3, on_step=lambda s, _: saved.append(s),
               progress=False)
  assert saved == [] and not os.path.exists(run.workdir)


def _nan_batches(config, run, poisoned: Callable[[int], bool]):
  """The run's meta-batches, with NaN support images (a non-finite meta-gradient: a skipped step) at the steps
  (from 1) where `poisoned(step)`."""
  nan_images = lambda batch: batch.replace(support={**batch.support, "image": batch.support["image"] * np.nan})
  return (nan_images(b) if poisoned(i + 1) else b for i, b in enumerate(meta_batches(config, run.dataset, 0)))


def test_a_run_stops_when_more_than_the_allowed_fraction_of_recent_steps_was_skipped(opened):
  """skip_window=4, max_skipped_fraction=0.5: two skipped of four is allowed, three is not."""
  config, run = opened
  saved = []
  with pytest.raises(DivergedError, match=r"^step 4: 4 of the last 4 steps were skipped .* more than "
                                          r"safeguards.max_skipped_fraction=0.5"):
    meta_train(run.learner, run.fresh_state(), _nan_batches(config, run, lambda step: True), 10,
               on_step=lambda s, _: saved.append(s), progress=False)
  assert saved == [1, 2, 3]  # skipped steps leave the state as it was: finite, and saved

  every_other = _nan_batches(config, run, lambda step: step % 2 == 0)
  state, _ = meta_train(run.learner, run.fresh_state(), every_other, 8, progress=False)
  assert int(state.step) == 8 and int(state.step) - int(state.accepted_steps) == 4

  two_of_three = _nan_batches(config, run, lambda step: step % 3 != 1)  # steps 2, 3, 5, 6, ... skipped
  with pytest.raises(DivergedError, match=r"^step 5: 3 of the last 4 steps were skipped"):
    meta_train(run.learner, run.fresh_state(), two_of_three, 8, progress=False)


def test_evaluation_refuses_a_non_finite_checkpoint(reference, tmp_path):
  config, workdir = reference
  run_dir = rf.copy_run(workdir, str(tmp_path / "run"))
  run = open_run(config, run_dir)
  _, state = run.trained_state()
  nan_params = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), state.params)
  run.checkpointer.save(STEPS + 1, state.replace(params=nan_params), {"next_index": STEPS + 1}, force=True)
  with pytest.raises(CheckpointError, match=r"holds NaN or inf in its parameters: it cannot be evaluated"):
    run.trained_state(STEPS + 1)
  run.close()


def test_failing_and_reading_commands_write_nothing(reference, data_dir, tmp_path):
  config, workdir = reference
  new_dir = tmp_path / "new"
  with pytest.raises(Exception):
    train(rf.with_overrides(config, **{"data.train_split": "bogus"}), str(new_dir), progress=False)
  assert not new_dir.exists()
  before = rf.snapshot(workdir)
  run = open_run(rf.with_overrides(config, steps=2, **{"adapt.steps": 1}), workdir)  # what evaluate.py --config=... does
  run.trained_state()
  run.close()
  assert rf.snapshot(workdir) == before


def test_logged_rates_and_hparams(reference):
  config, workdir = reference
  records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  for record in records:
    assert record["steps_per_s"] > 0 and record["examples_per_s"] == pytest.approx(
        record["steps_per_s"] * config.meta.episodes * (config.meta.support_size + config.meta.query_size))
  assert records[-1]["wall_time_s"] > records[0]["wall_time_s"] > 0
  assert "_hparams_/experiment" in {tag for tag, _, _ in rf.tensorboard_values(workdir)}


@pytest.mark.slow
def test_eval_every_logs_validation_scores_and_keeps_the_best_checkpoint(data_dir, tmp_path):
  config = rf.tiny_config(data_dir, steps=6, checkpoint_every=1, keep_checkpoints=1, eval_every=2, log_every=2)
  workdir = str(tmp_path / "run")
  train(config, workdir, progress=False)
  scores = {r["step"]: r["validation/segmentation/miou"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if "validation/segmentation/miou" in r}
  assert sorted(scores) == [2, 4, 6]
  best_step = max(scores, key=scores.get)
  with open(os.path.join(workdir, "checkpoints_best", "best.json")) as f:
    best = json.load(f)
  assert best["step"] == best_step and best["value"] == pytest.approx(scores[best_step])
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints_best"))) == sorted([str(best_step), "best.json"])
  run = open_run(config, workdir)
  assert run.trained_state(best_step)[0] == best_step  # found in checkpoints_best/
  run.close()
  assert ("validation/segmentation/miou", best_step, pytest.approx(scores[best_step])) in [
      (tag, step, value) for tag, step, value in rf.tensorboard_values(workdir)]


@pytest.mark.slow
def test_profile_steps_writes_a_trace(data_dir, tmp_path):
  workdir = tmp_path / "run"
  train(rf.tiny_config(data_dir, steps=3, profile_steps=1), str(workdir), progress=False)
  traces = [f for _, _, fs in os.walk(workdir / "profile") for f in fs if f.endswith(".xplane.pb")]
  assert traces


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_the_resumed_run_equals_an_uninterrupted_one(reference, tmp_path):
  config, workdir = reference
  run_dir = str(tmp_path / "run")
  command = rf.meta_train_command(config.data.data_dir, run_dir, steps=STEPS, checkpoint_every=1,
                                  keep_checkpoints=STEPS, log_every=1)
  process = rf.start(command)
  metrics = os.path.join(run_dir, "metrics.jsonl")
  while not (os.path.exists(metrics) and os.path.getsize(metrics)) and process.poll() is None:
    time.sleep(0.05)  # the first step is logged: training is under way
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=600)
  if process.returncode == 0:
    pytest.skip("the run finished before the signal arrived")
  assert process.returncode == 128 + signal.SIGTERM
  last = stderr.strip().splitlines()[-1]
  step = int(last.split("after step ")[1].split()[0])
  assert last.startswith("stopped by SIGTERM") and os.path.isdir(os.path.join(run_dir, "checkpoints", str(step)))
  rf.assert_bitwise_equal(rf.state_leaves(config, run_dir, step), rf.state_leaves(config, workdir, step))
  resumed = rf.start(command)
  assert resumed.wait(timeout=600) == 0
  rf.assert_bitwise_equal(rf.state_leaves(config, run_dir), rf.state_leaves(config, workdir))
  assert rf.jsonl_steps(run_dir) == list(range(1, STEPS + 1))


def _damage_all(run_dir: str) -> None:
  for step in os.listdir(os.path.join(run_dir, "checkpoints")):
    _damage(os.path.join(run_dir, "checkpoints", step), "truncated data file")


def test_an_export_never_replaces_a_run_overwrite_or_not(reference, tmp_path):
  """`--out` at the run, above it, inside it (but its own WORKDIR/export), at another run, or at a directory that
  is not an earlier export is refused before anything is read or written."""
  config, workdir = reference
  run_dir = rf.copy_run(workdir, str(tmp_path / "runs" / "run"))
  other = rf.copy_run(workdir, str(tmp_path / "other"))
  stranger = tmp_path / "notes"
  stranger.mkdir()
  (stranger / "todo.txt").write_text("keep me")
  before = rf.snapshot(str(tmp_path))
  refused = {run_dir: "is or holds the run being exported", str(tmp_path / "runs"): "is or holds the run",
             os.path.join(run_dir, "checkpoints"): "lies inside the run directory",
             os.path.join(run_dir, "checkpoints", str(STEPS)): "lies inside the run directory",
             os.path.join(run_dir, "tensorboard"): "lies inside the run directory",
             other: "is the run directory", os.path.join(other, "export"): "lies inside the run directory",
             str(stranger): "is not an earlier export (it holds todo.txt)"}
  for out, message in refused.items():
    with pytest.raises(ConfigError, match=re.escape(message)):
      export_run(run_dir, None, out, config, overwrite=True)
  assert rf.snapshot(str(tmp_path)) == before
  for allowed in (os.path.join(run_dir, "export"), str(tmp_path / "new")):
    check_out(allowed, run_dir, overwrite=True)
  earlier = tmp_path / "earlier"
  earlier.mkdir()
  for name in ("spec.json", "inference.jax_exported", "report.md"):
    (earlier / name).write_text("")
  check_out(str(earlier), run_dir, overwrite=True)
  with pytest.raises(ConfigError, match="is not empty; give --overwrite"):
    check_out(str(earlier), run_dir, overwrite=False)


def test_a_checkpoint_that_does_not_fit_the_config_is_refused_and_never_set_aside(reference, tmp_path):
  """A config.json edited by hand (or a checkpoint of another msp version): the leaves that differ are listed."""
  config, workdir = reference
  run_dir = rf.copy_run(workdir, str(tmp_path / "run"))
  path = os.path.join(run_dir, "config.json")
  with open(path, encoding="utf-8") as f:
    edited = json.load(f)
  assert edited["model"]["head_width"] == 8
  edited["model"]["head_width"] = 16
  with open(path, "w", encoding="utf-8") as f:
    json.dump(edited, f)
  before = rf.snapshot(run_dir)
  with pytest.raises(IncompatibleCheckpointError) as error:
    train(rf.with_overrides(config, steps=STEPS + 2, **{"model.head_width": 16}), run_dir, progress=False)
  message = str(error.value)
  assert f"checkpoints/{STEPS} does not fit this run's state" in message and "\n" not in message
  assert "params/head_depth/conv/bias: checkpoint (1,) float32" not in message  # heads' last convs keep their width
  assert re.search(r"params/head_\w+/conv\w*/kernel: checkpoint \(3, 3, \d+, 8\) float32, run \(3, 3, \d+, 16\)",
                   message), message
  assert rf.snapshot(run_dir) == before


def test_a_run_none_of_whose_checkpoints_can_be_read_is_refused_and_left_as_it_was(reference, tmp_path):
  config, workdir = reference
  run_dir = rf.copy_run(workdir, str(tmp_path / "run"))
  _damage_all(run_dir)
  before = rf.snapshot(run_dir)
  steps = ", ".join(str(s) for s in range(STEPS, 0, -1))
  with pytest.raises(CheckpointError, match=re.escape(f"none of the checkpoints in {run_dir}/checkpoints can be "
                                                      f"read ({steps})")):
    train(config, run_dir, progress=False)
  assert rf.snapshot(run_dir) == before
  # as an earlier msp left such a run: every checkpoint set aside
  for step in range(1, STEPS + 1):
    os.rename(os.path.join(run_dir, "checkpoints", str(step)), os.path.join(run_dir, "checkpoints", f"{step}.corrupt"))
  before = rf.snapshot(run_dir)
  with pytest.raises(CheckpointError, match=r"can be read \(1.corrupt, 2.corrupt, .*move .* away"):
    train(config, run_dir, progress=False)
  assert rf.snapshot(run_dir) == before


def test_a_failed_tensorboard_write_ends_the_run_at_once_naming_the_file(reference, tmp_path, monkeypatch):
  """The event file is written in the training thread: a full disk raises there, where a writer thread used to die
  and leave the training loop blocked on its queue forever."""
  config, _ = reference
  workdir = str(tmp_path / "run")
  writes = []

  def full_disk(self, data):
    writes.append(len(data))
    if len(writes) > 3:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(tensorboardX.record_writer.RecordWriter, "write", full_disk)
  outcome = []
  worker = threading.Thread(target=lambda: outcome.append(_raised(train, config, workdir, progress=False)),
                            daemon=True)
  worker.start()
  worker.join(timeout=300)
  assert not worker.is_alive(), "the run hung on a failed TensorBoard write"
  assert isinstance(outcome[0], WriteError), outcome
  assert re.fullmatch(rf"cannot write {re.escape(workdir)}/tensorboard/events\.out\.tfevents\.\S+: No space left on "
                      r"device", str(outcome[0])), outcome


def _raised(function, *args, **kwargs) -> BaseException | None:
  try:
    function(*args, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    return e
  return None


class _FullDisk(io.StringIO):
  def write(self, text):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_failed_log_and_result_writes_name_the_file_and_the_reason(tmp_path):
  writer = MetricWriter(str(tmp_path))
  writer._jsonl = _FullDisk()  # pylint: disable=protected-access
  with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(tmp_path))}/metrics.jsonl: No space left on "
                                       r"device$"):
    writer.write(1, {"loss": 1.0})
  blocker = tmp_path / "eval"
  blocker.write_text("a file where a directory should be")
  with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(blocker))}/sub: Not a directory$"):
    write_results(str(blocker / "sub"), "test_step1", {}, "| table |")
  assert blocker.read_text() == "a file where a directory should be"
