"""Config validation names the bad key; the quickstart runs end to end on its tiny variant."""
import os
import subprocess
import sys

import pytest

from experiments.configs import teacher_student
from msp.train import ConfigError, build_meta_learner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("key,value,message", [
    ("meta.inner_steps", 0, "config.meta.inner_steps=0 must be an integer ≥ 1"),
    ("optim.lr", -1e-3, "config.optim.lr=-0.001 must be > 0"),
    ("meta.mode", "third_order", "config.meta.mode='third_order'; choose one of"),
    ("sparsity.lambda_mode", "per_channel", "config.sparsity.lambda_mode='per_channel'"),
    ("sparsity.lambda_init", 0.0, "config.sparsity.lambda_init=0.0 must be > 0"),
    ("seen_tasks", ("task0", "nope"), "config.seen_tasks names 'nope'"),
])
def test_bad_config_values_name_the_key(key, value, message):
  config = teacher_student.get_config("tiny")
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError) as info:
    build_meta_learner(config)
  assert message in str(info.value)


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="unknown variant 'huge'"):
    teacher_student.get_config("huge")


@pytest.mark.slow
def test_quickstart_tiny_prints_lambda_and_sparsity():
  out = subprocess.run(
      [sys.executable, "experiments/teacher_student.py", "--config=experiments/configs/teacher_student.py:tiny",
       "--config.steps=2"], cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "backbone/stage0_conv1" in out.stdout and "total group sparsity" in out.stdout
  assert "2 outer steps" in out.stdout
