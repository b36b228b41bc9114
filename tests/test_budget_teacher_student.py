"""Budget mode on a teacher–student problem with a known sparse structure: 3 conv layers × 32 channels, of which
the teacher keeps (16, 8, 4); 4 regression tasks; fresh data every step (`experiments/configs/teacher_student.py`)."""
import functools

import numpy as np
import pytest

from data_pipelines.teacher_student import TeacherStudent
from experiments.configs import teacher_student
from experiments.run.student import adapted_test_mse, train
from msp.train import build_meta_learner

# Surviving channels may differ from the teacher's by this many per layer (of 32). Measured with the `budget`
# variant: [19, 4, 5] (seed 0, the one tested), [18, 6, 4] (seed 1) and [19, 4, 5] (seed 2) against [16, 8, 4].
CHANNEL_TOLERANCE = 5
# The pruned student's mean test error (targets have unit variance: predicting zero scores 1.0) stays below this.
# Measured at the teacher's sparsity, budget vs dense student: seed 0 0.238 vs 0.086, seed 1 0.143 vs 0.031, seed 2
# 0.160 vs 0.042. A bound relative to the dense student (2.8-4.6x here) moved with every change of the step's
# floating-point order (the same seed measured 1.7x, 2.2x and 2.8x on three implementations of the meta-step).
MAX_TEST_MSE = 0.3


@functools.cache
def _run(**overrides) -> tuple[list[dict], float]:
  """The `budget` variant with `overrides` ("section.leaf": value) → (logged history, mean test MSE over the 4
  tasks, as experiments/teacher_student.py measures it)."""
  config = teacher_student.get_config("budget")
  for key, value in overrides.items():
    section, leaf = key.split(".")
    config[section][leaf] = value
  learner, data, state, history = train(config, progress=False, log_every=10)
  return history, float(np.mean(list(adapted_test_mse(learner, state, data, config.seed).values())))


def _assert_safeguards_held(history: list[dict]) -> None:
  guard = teacher_student.get_config().safeguards
  # no layer ever dropped below its floor, μ stayed a valid (non-negative) multiplier, λ stayed within its bounds
  assert min(int(np.min(h["alive_channels"])) for h in history) >= guard.min_channels
  assert min(float(h["mu"]) for h in history) >= 0.0
  lambdas = np.stack([h["lambda"] for h in history])
  assert lambdas.min() >= guard.lambda_min * (1 - 1e-5) and lambdas.max() <= guard.lambda_max * (1 + 1e-5)


@pytest.mark.slow
def test_budget_at_the_teachers_sparsity_keeps_the_teachers_channels_per_layer():
  history, mse = _run()
  final, target = history[-1], teacher_student.TEACHER_SPARSITY
  assert abs(float(final["group_sparsity_total"]) - target) <= 0.05, final["group_sparsity_total"]
  alive = np.asarray(final["alive_channels"])
  teacher = np.asarray(teacher_student.TEACHER_ALIVE)
  assert np.max(np.abs(alive - teacher)) <= CHANNEL_TOLERANCE, (alive, teacher)
  _assert_safeguards_held(history)
  assert mse <= MAX_TEST_MSE, mse


@pytest.mark.slow
def test_budget_mode_lands_near_a_lower_target():
  target = 0.5
  history, mse = _run(**{"budget.target": target})
  assert abs(float(history[-1]["group_sparsity_total"]) - target) <= 0.05, history[-1]["group_sparsity_total"]
  _assert_safeguards_held(history)
  assert mse <= MAX_TEST_MSE, mse


def test_teacher_keeps_the_given_channels_per_layer():
  config = teacher_student.get_config("tiny")
  learner = build_meta_learner(config)
  data = TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size, (3, 2, 1), seed=0)
  alive = [int(np.sum(a)) for a in learner.spec.alive(data.variables["params"])]
  assert alive == [3, 2, 1]
  with pytest.raises(ValueError, match="one count in"):
    TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size, (3, 2), seed=0)
