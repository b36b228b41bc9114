"""The sweep: its plan, slices, stage bookkeeping and ETA (experiments/sweep.py), and the tables made from it."""
import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from experiments.run import grid as sweep
from experiments.configs import sweep as sweep_configs
from experiments.run.training import load_config
from msp.train.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(methods, seeds=(0, 1, 2)):
  c = sweep_configs.get_config("synthetic,tiny")
  c.methods, c.seeds = tuple(methods), tuple(seeds)
  return c


def test_plan_keeps_magnitude_runs_with_the_dense_run_they_prune_and_shards_partition_it(tmp_path):
  methods = ("single_task,task=segmentation", "magnitude,flops=0.5,scope=uniform", "budget,flops=0.5",
             "magnitude,flops=0.25,scope=global")
  units = sweep.plan(_config(methods), str(tmp_path))
  jobs = [job for unit in units for job in unit]
  # dense_mtl is added (magnitude needs it), once per seed; every method × seed once
  assert sorted((j.method, j.seed) for j in jobs) == sorted((m, s) for m in ("dense_mtl", *methods) for s in (0, 1, 2))
  for unit in units:
    if unit[0].method == "dense_mtl":
      assert [j.method for j in unit[1:]] == [methods[1], methods[3]]
      assert all(j.source == unit[0].workdir and j.seed == unit[0].seed for j in unit[1:])
    else:
      assert len(unit) == 1 and unit[0].source is None
  assert jobs[0].method == "dense_mtl"  # added first: the runs pruned from it follow it
  single = next(j for j in jobs if j.variant == "single_task" and j.seed == 0)
  assert single.workdir == os.path.join(str(tmp_path), "single_task_task=segmentation", "seed0")
  for n in (1, 2, 3, 5):
    slices = [[j for u in units[i::n] for j in u] for i in range(n)]
    assert sorted(j.workdir for s in slices for j in s) == sorted(j.workdir for j in jobs)


def test_job_targets_and_shards():
  job = sweep.Job("magnitude,flops=0.25,scope=global", 1, "/x")
  assert job.variant == "magnitude" and job.target == {"flops": 0.25, "scope": "global"}
  assert sweep.Job("dense_mtl", 0, "/x").target is None
  assert sweep.parse_shard("2/3") == (2, 3)
  for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
    with pytest.raises(ConfigError, match="--shard"):
      sweep.parse_shard(bad)


def test_job_config_sets_the_seed_and_the_sweeps_overrides(tmp_path):
  c = _config(["dense_mtl"])
  c.data_dir, c.steps, c.finetune_steps = str(tmp_path), 7, 3
  config = sweep.job_config(c, sweep.Job("dense_mtl", 2, str(tmp_path / "run")))
  assert (config.seed, config.steps, config.finetune.steps, config.data.data_dir) == (2, 7, 3, str(tmp_path))
  assert config.image_size == 32  # the tiny variant
  with pytest.raises(ConfigError, match="config.methods: unknown variant"):
    sweep.job_config(c, sweep.Job("bogus", 0, str(tmp_path)))


def test_a_methods_own_overrides_follow_the_sweeps_and_give_it_a_label_of_its_own(tmp_path):
  c = _config(["budget,flops=0.5+steps=9+budget.dual_lr=0.001+sparsity.lambda_mode=global"])
  c.steps = 7
  job = sweep.plan(c, str(tmp_path))[0][0]
  assert (job.variant, job.target) == ("budget", {"flops": 0.5})
  config = sweep.job_config(c, job)
  assert (config.steps, config.budget.dual_lr, config.sparsity.lambda_mode) == (9, 0.001, "global")
  assert config.budget.target == 0.5  # the variant arg still applies
  assert sweep.record(job, "synthetic")["label"] == job.method
  for method, problem in (("dense_mtl+budget.nonsense=1", "'budget.nonsense' is not a key"),
                          ("dense_mtl+steps=many", "steps='many' does not fit"),
                          ("dense_mtl+budget=1", "'budget' is a section"),
                          ("dense_mtl+steps", "the override 'steps' is not KEY=VALUE")):
    with pytest.raises(ConfigError, match=re.escape(f"config.methods: {method!r}: {problem}")):
      sweep.job_config(c, sweep.Job(method, 0, str(tmp_path)))
  with pytest.raises(ConfigError):  # in Sweep too, before anything is written
    sweep.Sweep(_config(["dense_mtl+steps=many"]), str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()


def test_finished_stages_are_read_from_the_files(tmp_path):
  c = _config(["dense_mtl"], seeds=(0,))
  job = sweep.plan(c, str(tmp_path))[0][0]
  config = sweep.job_config(c, job)
  assert [s.name for s in sweep.pending(job, config, c)] == list(sweep.STAGES)
  for step in (2, config.steps):
    os.makedirs(os.path.join(job.workdir, "checkpoints", str(step)))
  os.makedirs(os.path.join(job.workdir, "checkpoints", f"{config.steps + 2}.orbax-checkpoint-tmp-1"))  # in flight
  os.makedirs(os.path.join(job.workdir, "eval"))
  open(os.path.join(job.workdir, "eval", f"test_step{config.steps}.json"), "w").close()
  assert [s.name for s in sweep.pending(job, config, c)] == list(sweep.STAGES[2:])
  c.adapt, c.export = ("finetuned",), False
  assert [s.name for s in sweep.pending(job, config, c)] == ["finetune", "evaluate_finetuned", "adapt_finetuned"]
  c.adapt = ()
  assert [s.name for s in sweep.pending(job, config, c)] == ["finetune", "evaluate_finetuned"]


def test_an_unknown_network_to_adapt_is_one_config_error_before_anything_is_written(tmp_path):
  c = _config(["dense_mtl"], seeds=(0,))
  c.adapt = ("finetuned", "trianed")
  with pytest.raises(ConfigError, match=r"config.adapt=.*'trianed' is not one of \('trained', 'finetuned'\)"):
    sweep.Sweep(c, str(tmp_path / "sweep"))
  assert not os.path.exists(tmp_path / "sweep")


def test_eta_uses_what_was_measured_else_the_expected_seconds(tmp_path):
  c = _config(["dense_mtl", "budget,flops=0.5"], seeds=(0,))
  dense, budget = (unit[0] for unit in sweep.plan(c, str(tmp_path)))
  config = sweep.job_config(c, dense)
  e = c.expected_seconds
  estimator = sweep.Estimator(c, [])
  assert estimator.seconds("train", dense, config) == pytest.approx(e.startup + config.steps * e.train_step)
  assert estimator.seconds("evaluate_finetuned", dense, config) == e.evaluate
  estimator.add("train", "dense_mtl", 10.0)
  estimator.add("train", "dense_mtl", 20.0)
  assert estimator.seconds("train", dense, config) == 15.0
  assert estimator.seconds("train", budget, config) == 15.0  # no budget run measured yet: the stage's mean
  estimator.add("train", "budget", 40.0)
  assert estimator.seconds("train", budget, config) == 40.0
  assert [sweep.duration(s) for s in (40, 600, 3700)] == ["40 s", "10 min", "1 h 01 min"]


def _sweep_command(data_dir: str, root: str, *flags: str) -> list[str]:
  return [sys.executable, "experiments/sweep.py", "--config=experiments/configs/sweep.py:synthetic,tiny",
          f"--workdir={root}", f"--config.data_dir={data_dir}", "--config.seeds=(0,)", *flags]


def _sweep(data_dir: str, root: str, *flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(_sweep_command(data_dir, root, *flags), cwd=ROOT, capture_output=True, text=True,
                        timeout=3000, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.slow
def test_the_tiny_sweep_in_two_slices_at_once_then_its_tables(data_dir, tmp_path):
  root = str(tmp_path / "sweep")
  config = sweep_configs.get_config("synthetic,tiny")
  # two processes at once, as the tasks of an array job: each builds the dataset if it is missing, runs its slice
  slices = [subprocess.Popen(_sweep_command(data_dir, root, f"--shard={shard}"), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
            for shard in ("1/2", "2/2")]
  for process in slices:
    _, err = process.communicate(timeout=3000)
    assert process.returncode == 0, err[-3000:]
  runs = sorted(glob.glob(os.path.join(root, "*", "seed0")))
  assert len(runs) == len(config.methods)
  for run in runs:
    record = json.load(open(os.path.join(run, "sweep.json")))
    single = record["method"] == "single_task"
    expected = [s for s in sweep.STAGES if not (single and s.startswith("adapt"))]
    assert sorted(record["seconds"]) == sorted(expected), record
    assert os.path.exists(os.path.join(run, "finetuned", "export", "report.json"))
  # everything is finished: nothing runs again; a deleted result is made again, and only it
  out = _sweep(data_dir, root, "--dry_run")
  assert out.returncode == 0 and "\n0 stages to run" in out.stdout, out.stdout
  budget = os.path.join(root, "budget_flops=0.5", "seed0")
  shutil.rmtree(os.path.join(budget, "finetuned", "eval"))
  out = _sweep(data_dir, root)
  assert out.returncode == 0 and "[1/1] budget,flops=0.5 seed 0: evaluate_finetuned" in out.stdout, out.stdout[-2000:]

  tables = str(tmp_path / "tables")
  out = subprocess.run([sys.executable, "experiments/reports/tables.py", f"--runs={root}/*/seed*",
                        f"--baseline={root}/single_task*/seed*", f"--out={tables}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  for name in ("table.md", "table.tex", "table.csv", "front.png", "channels.png", "lambda.png"):
    assert os.path.getsize(os.path.join(tables, name)) > 0, name
  rows = list(csv.DictReader(open(os.path.join(tables, "table.csv"))))
  seen = {(r["method"], r["stage"]) for r in rows if r["block"] == "seen"}
  assert seen == {(m, s) for m in config.methods if not m.startswith("single_task")
                  for s in ("as trained", "after fine-tuning")}  # the single-task runs are the Δm reference only
  # a thin network's FLOPs are counted against the full-width backbone
  thin = next(r for r in rows if r["method"] == "thin_dense,flops=0.5" and r["stage"] == "as trained")
  fraction = load_config(os.path.join(root, "thin_dense_flops=0.5", "seed0"))["model"]["flops_fraction"]
  assert float(thin["flops_kept"]) == pytest.approx(fraction) and fraction < 0.5
