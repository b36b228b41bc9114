"""A run's own files in an object store: `gs://` paths through etils.epath, on a fake store (`store` in
conftest.py: epath's mock backend keeping each `gs://BUCKET/KEY` in a local directory). Checkpoints themselves are
orbax's (tensorstore) and are not faked here."""
import json
import os
import re
import shutil

import numpy as np
import pytest

from experiments.configs import synthetic
from experiments.run import grid
from experiments.run.deployment import EXPORT_ENTRIES, ExportOptions, check_out, export_run
from experiments.run.training import load_config, open_run, read_best
from msp.export import artifact, load
from msp.train.checkpoint import CheckpointError, RunCheckpointer
from msp.train.config import ConfigError
from msp.train.evaluation import write_results
from msp.train.files import as_path, is_remote, write_text_atomic
from msp.train.writer import MetricWriter, read_events, read_jsonl


def test_paths_tell_a_bucket_from_a_local_directory():
  assert is_remote("gs://bucket/run") and not is_remote("runs/x") and not is_remote("/abs/runs")
  assert os.fspath(as_path("gs://bucket/run") / "config.json") == "gs://bucket/run/config.json"
  assert os.fspath(as_path("~/runs")) == os.path.expanduser("~/runs")


def test_small_files_and_results_go_to_the_bucket(store):
  write_text_atomic("gs://bucket/run/config.json", json.dumps(synthetic.get_config("budget,tiny").to_dict()))
  assert (store / "bucket/run/config.json").is_file()
  assert tuple(load_config("gs://bucket/run").seen_tasks) == synthetic.get_config("budget,tiny").seen_tasks
  assert read_best("gs://bucket/run") is None
  write_text_atomic("gs://bucket/run/checkpoints_best/best.json", json.dumps({"step": 4}))
  assert read_best("gs://bucket/run") == {"step": 4}
  paths = write_results("gs://bucket/run/eval", "test_step4", {"results": {"depth": {"rmse": 1.5}}}, "| table |")
  assert paths == ("gs://bucket/run/eval/test_step4.json", "gs://bucket/run/eval/test_step4.md")
  assert json.loads((store / "bucket/run/eval/test_step4.json").read_text())["results"]["depth"]["rmse"] == 1.5
  assert sorted(os.listdir(store / "bucket/run/eval")) == ["test_step4.json", "test_step4.md"]  # no temporaries


def test_a_bucket_workdir_is_checked_against_its_config_before_anything_is_written(store):
  config = synthetic.get_config("budget,tiny")
  write_text_atomic("gs://bucket/run/config.json", config.to_json_best_effort(sort_keys=True))
  RunCheckpointer("gs://bucket/run", config, save_every=2)  # the same config: accepted
  config.meta.inner_lr = 0.5
  before = sorted(p.name for p in (store / "bucket/run").iterdir())
  with pytest.raises(CheckpointError, match=r"meta.inner_lr"):
    RunCheckpointer("gs://bucket/run", config, save_every=2)
  assert sorted(p.name for p in (store / "bucket/run").iterdir()) == before


def test_logs_in_a_bucket_are_uploaded_whole_and_truncated_on_resume(store):
  workdir = "gs://bucket/run"
  writer = MetricWriter(workdir, {"lambda": ["a", "b"]})
  for step in range(1, 6):
    writer.write(step, {"loss": step / 10, "lambda": [step, -step]})
  writer.flush()
  assert [r["step"] for r in read_jsonl(f"{workdir}/metrics.jsonl")] == [1, 2, 3, 4, 5]
  writer.write(6, {"loss": 0.6, "lambda": [6, -6]})
  writer.close()
  records = read_jsonl(f"{workdir}/metrics.jsonl")
  assert records[-1] == {"step": 6, "loss": 0.6, "lambda/a": 6.0, "lambda/b": -6.0}
  [events_file] = os.listdir(store / "bucket/run/tensorboard")
  steps = [e.step for e in read_events(f"{workdir}/tensorboard/{events_file}") if e.summary.value]
  assert steps == [1, 2, 3, 4, 5, 6]

  resumed = MetricWriter(workdir, {"lambda": ["a", "b"]}, resume_step=3)  # a run resumed from checkpoint 3
  resumed.write(4, {"loss": 0.44, "lambda": [4, -4]})
  resumed.close()
  assert [(r["step"], r["loss"]) for r in read_jsonl(f"{workdir}/metrics.jsonl")] == [
      (1, 0.1), (2, 0.2), (3, 0.3), (4, 0.44)]
  files = sorted(os.listdir(store / "bucket/run/tensorboard"))
  assert len(files) == 2 and all(f.startswith("events.out.tfevents.") for f in files)
  logged = sorted((e.step, e.summary.value[0].simple_value) for f in files
                  for e in read_events(f"{workdir}/tensorboard/{f}") if e.summary.value)
  assert [s for s, _ in logged] == [1, 2, 3, 4] and logged[-1][1] == pytest.approx(0.44)


@pytest.fixture
def run_with_a_checkpoint(tmp_path):
  """(config, workdir) of a local tiny run with one checkpoint, its fresh state."""
  config = synthetic.get_config("budget,tiny")
  config.data.data_dir = str(tmp_path / "tfds")
  workdir = str(tmp_path / "run")
  run = open_run(config, workdir)
  try:
    run.checkpointer.save(1, run.fresh_state(), {"next_index": 1}, force=True)
  finally:
    run.close()
  return config, workdir


def test_an_export_goes_to_a_bucket_through_a_staging_prefix(run_with_a_checkpoint, store, monkeypatch, tmp_path):
  """The whole export in gs://: checked against the run, staged beside OUT, the uploaded function read back and
  checked, renamed to OUT; an earlier export there replaced only with overwrite, and a bucket run never a target."""
  config, workdir = run_with_a_checkpoint
  save = artifact.ocp.save  # orbax writes gs:// with tensorstore's own driver, which the fake store cannot serve:

  def save_then_upload(path, *args, **kwargs):  # here it writes a local directory, copied into the fake bucket
    local = tmp_path / "orbax" / os.fspath(path).removeprefix("gs://")
    save(local, *args, **kwargs)
    shutil.copytree(local, store / os.fspath(path).removeprefix("gs://"), dirs_exist_ok=True)

  monkeypatch.setattr(artifact.ocp, "save", save_then_upload)
  options = ExportOptions(repeats=1, warmup=0, batch_sizes=(1,))
  out, step, table = export_run(workdir, None, "gs://bucket/exports/tiny/", config, options)
  assert (out, step) == ("gs://bucket/exports/tiny", 1) and "| latency, batch 1 (ms) |" in table
  exported = store / "bucket/exports/tiny"
  assert sorted(os.listdir(exported)) == sorted(EXPORT_ENTRIES)
  assert os.listdir(store / "bucket/exports") == ["tiny"]  # no staging prefix left behind
  outputs = load(str(exported))(np.zeros((2, config.image_size, config.image_size, 3), np.float32))
  assert set(outputs) == set(config.seen_tasks)
  assert json.loads((exported / "report.json").read_text())["source"]["step"] == 1

  with pytest.raises(ConfigError, match=r"--out='gs://bucket/exports/tiny' is not empty; give --overwrite"):
    export_run(workdir, None, "gs://bucket/exports/tiny", config, options)
  (exported / "spec.json").write_text("{}")
  export_run(workdir, None, "gs://bucket/exports/tiny", config, options, overwrite=True)
  assert json.loads((exported / "spec.json").read_text())["source"]["step"] == 1


def test_an_export_never_replaces_a_run_in_a_bucket(store):
  write_text_atomic("gs://bucket/runs/a/config.json", "{}")
  write_text_atomic("gs://bucket/runs/a/metrics.jsonl", "")
  refused = {"gs://bucket/runs/a/eval": "lies inside the run directory gs://bucket/runs/a",
             "gs://bucket/runs": "is or holds the run being exported (gs://bucket/runs/b)",
             "gs://bucket/runs/a": "is the run directory gs://bucket/runs/a",
             "gs://bucket/runs/a/config.json": "exists and is not a directory"}
  for out, message in refused.items():
    with pytest.raises(ConfigError, match=re.escape(message)):
      check_out(out, "gs://bucket/runs/b", overwrite=True)
  check_out("gs://bucket/runs/a/export", "gs://bucket/runs/a", overwrite=False)  # its own WORKDIR/export
  check_out("gs://bucket/exports/a", "gs://bucket/runs/a", overwrite=False)


def test_a_sweep_in_a_bucket_keeps_its_records_and_finds_its_results_there(store):
  job = grid.Job(method="budget,flops=0.5", seed=0, workdir=grid.job_dir("gs://bucket/sweep", "budget,flops=0.5", 0))
  assert job.workdir == "gs://bucket/sweep/budget_flops=0.5/seed0"
  fresh = grid.record(job, "synthetic")
  fresh["seconds"]["train"] = 12.5
  grid._save_record(job, fresh)  # pylint: disable=protected-access
  assert grid.record(job, "synthetic")["seconds"] == {"train": 12.5}
  assert (store / "bucket/sweep/budget_flops=0.5/seed0/sweep.json").is_file()
  for step in ("2", "4", "4.orbax-checkpoint-tmp"):
    (store / "bucket/sweep/budget_flops=0.5/seed0/checkpoints" / step).mkdir(parents=True)
  assert grid.committed_steps(job.workdir) == [2, 4]
