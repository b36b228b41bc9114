"""A workdir survives real use: refused relabelling, corrupt checkpoints, NaN, signals, resumed logs, the best
checkpoint, and what a training loop records (experiments/train.py, msp/train/{checkpoint,loop,writer}.py)."""
import json
import logging
import os
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.train import meta_batches, open_run, train
from msp.train.checkpoint import CheckpointError, CorruptCheckpointError
from msp.train.loop import meta_train
from msp.train.safeguards import DivergedError
from msp.train.writer import read_jsonl
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
  config = rf.tiny_config(data_dir, **{"safeguards.max_skipped_steps": 3})
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
  with pytest.raises(CorruptCheckpointError, match="is corrupt or incomplete") as error:
    rf.state_leaves(config, run_dir, STEPS)
  assert "\n" not in str(error.value) and "another model" not in str(error.value)
  with caplog.at_level(logging.WARNING):
    train(config, run_dir, progress=False)
  warnings = [r.getMessage() for r in caplog.records if "corrupt or incomplete" in r.getMessage()]
  assert len(warnings) == 1 and f"checkpoints/{STEPS}" in warnings[0] and f"{STEPS}.corrupt" in warnings[0]
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


def test_steps_skipped_in_a_row_stop_the_run(opened):
  config, run = opened
  nan_images = lambda batch: batch.replace(support={**batch.support, "image": batch.support["image"] * np.nan})
  batches = map(nan_images, meta_batches(config, run.dataset, 0))  # every meta-gradient NaN: every step skipped
  saved = []
  with pytest.raises(DivergedError, match=r"^steps 1-3: 3 steps in a row were skipped"):
    meta_train(run.learner, run.fresh_state(), batches, 10, on_step=lambda s, _: saved.append(s), progress=False)
  assert saved == [1, 2]  # skipped steps leave the state as it was: finite, and saved


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
