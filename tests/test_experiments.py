"""The experiment scripts end to end on the `tiny` synthetic variant: train, evaluate, adapt, resume, bad input."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import synthetic
from msp.train import ConfigError, build_meta_learner
from msp.train.checkpoint import CheckpointError
from experiments.run.training import open_run, train
from msp.train.writer import read_jsonl
from tests.run_fixtures import with_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, variant="budget", **overrides):
  config = synthetic.get_config(f"{variant},tiny")
  config.data.data_dir = data_dir
  return with_overrides(config, **overrides)


def _script(name, *args, env=None):
  """Runs experiments/NAME.py with `args` in the repository root (environment `env`, default this process's)."""
  return subprocess.run([sys.executable, f"experiments/{name}.py", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=900, env={**(os.environ if env is None else env), "PYTHONPATH": ROOT})


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """A tiny budget run meta-trained for 4 steps in one go, through the script."""
  workdir = str(tmp_path_factory.mktemp("run") / "budget")
  out = _script("meta_train", "--config=experiments/configs/synthetic.py:budget,tiny", f"--workdir={workdir}",
                f"--config.data.data_dir={data_dir}")
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


@pytest.mark.slow
def test_meta_train_writes_logs_checkpoints_and_config(trained):
  records = read_jsonl(os.path.join(trained, "metrics.jsonl"))
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert "lambda/backbone/stage0_conv1" in records[-1] and "group_sparsity_total" in records[-1]
  assert sorted(os.listdir(os.path.join(trained, "checkpoints"))) == ["2", "4"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(trained, "tensorboard")))
  with open(os.path.join(trained, "config.json")) as f:
    assert json.load(f)["budget"]["enabled"] is True


@pytest.mark.slow
def test_evaluate_and_adapt_unseen_scripts(trained):
  out = _script("evaluate", f"--workdir={trained}")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(trained, "eval", "test_step4.json")) as f:
    results = json.load(f)["results"]
  assert set(results) == set(synthetic.get_config("budget,tiny").seen_tasks)
  assert 0 <= results["segmentation"]["miou"] <= 1 and results["depth"]["abs_err"] > 0
  assert "| segmentation | miou ↑ |" in out.stdout
  out = _script("adapt_unseen", f"--workdir={trained}")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(trained, "adapt", "heads_step4.json")) as f:
    adapted = json.load(f)
  assert set(adapted["unseen"]) == set(synthetic.get_config("budget,tiny").unseen_tasks)
  assert 0 <= adapted["unseen"]["edges"]["ods_f"] <= 1
  # adapting heads leaves the backbone as meta-trained, so the seen tasks score exactly as in evaluate.py
  assert adapted["seen"] == results


@pytest.mark.slow
def test_a_resumed_run_equals_an_uninterrupted_one(data_dir, trained, tmp_path):
  workdir = str(tmp_path / "resumed")
  train(_config(data_dir, steps=2), workdir, progress=False)
  state, _ = train(_config(data_dir, steps=4), workdir, progress=False)
  run = open_run(_config(data_dir), trained)
  try:
    reference, _ = run.state()
  finally:
    run.close()
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  timing = ("steps_per_s", "examples_per_s", "wall_time_s")
  computed = lambda path: [{k: v for k, v in r.items() if k not in timing} for r in read_jsonl(path)]
  assert computed(os.path.join(workdir, "metrics.jsonl")) == computed(os.path.join(trained, "metrics.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fixed_lambda", "maml"])
def test_baseline_variants_train(data_dir, variant, tmp_path):
  """The modes themselves are checked numerically in test_meta_gradient; here the configs run end to end."""
  _, history = train(_config(data_dir, variant, steps=2), str(tmp_path / variant), progress=False)
  final = history[-1]
  assert np.isfinite(final["loss"])
  if variant in ("dense_mtl", "maml"):
    assert float(final["group_sparsity_total"]) == 0.0
  if variant in ("dense_mtl", "fixed_lambda"):
    # no meta-learning: λ stays at its initial value
    np.testing.assert_allclose(final["lambda"], 0.05, rtol=1e-6)


def test_unknown_config_key_is_one_clear_error(tmp_path):
  out = _script("meta_train", "--config=experiments/configs/synthetic.py:budget,tiny",
                f"--workdir={tmp_path / 'w'}", "--config.meta.inner_stepz=2")
  assert out.returncode != 0 and "inner_stepz" in out.stderr
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("key,value,message", [
    ("meta.inner_steps", 0, "config.meta.inner_steps=0 must be an integer ≥ 1"),
    ("optim.lr", -0.1, "config.optim.lr=-0.1 must be > 0"),
    ("budget.target", 1.5, "config.budget.target=1.5 must lie strictly between 0 and 1"),
])
def test_out_of_range_values_name_the_key_and_write_nothing(data_dir, tmp_path, key, value, message):
  workdir = tmp_path / "w"
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    open_run(_config(data_dir, **{key: value}), str(workdir))
  assert not workdir.exists()


def test_missing_or_unwritable_workdir(data_dir, tmp_path):
  out = _script("evaluate", f"--workdir={tmp_path / 'never_trained'}")
  assert out.returncode == 2 and "never_trained/config.json does not exist" in out.stderr
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(CheckpointError, match=str(blocker)):
    open_run(_config(data_dir), str(blocker / "run"))


@pytest.mark.slow
def test_checkpoint_of_an_incompatible_config_is_refused_and_kept(data_dir, trained):
  config = _config(data_dir)
  config.model.backbone.widths = (4, 16)
  before = _snapshot(trained)
  with pytest.raises(CheckpointError, match="model.backbone.widths"):
    open_run(config, trained)
  assert _snapshot(trained) == before


def _snapshot(directory):
  """{path: (size, mtime)} of every file below `directory`."""
  return {os.path.join(d, f): (os.path.getsize(os.path.join(d, f)), os.path.getmtime(os.path.join(d, f)))
          for d, _, files in os.walk(directory) for f in files}


@pytest.mark.slow
def test_quickstart_prints_one_table(data_dir, trained):
  out = _script("quickstart", "--config=experiments/configs/synthetic.py:budget,tiny", f"--workdir={trained}",
                f"--config.data.data_dir={data_dir}")
  assert out.returncode == 0, out.stderr[-3000:]
  for expected in ("| segmentation | miou ↑ |", "| edges | ods_f ↑ |", "| backbone/stage0_conv1 |",
                   "group sparsity", "FLOPs kept", "untrained | meta-trained"):
    assert expected in out.stdout, expected


@pytest.mark.parametrize("variant", synthetic.VARIANTS)
def test_every_variant_config_builds(variant):
  config = synthetic.get_config(f"{variant},tiny")
  learner = build_meta_learner(config)
  assert learner.spec.num_layers > 0 and [t.name for t in learner.tasks] == list(config.seen_tasks)
