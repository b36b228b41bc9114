"""Budget mode on a teacher–student problem with a known sparse structure (3 conv layers × 32 channels, 8 alive)."""
import itertools

import jax
import numpy as np
import pytest

from data_pipelines.teacher_student import TeacherStudent
from experiments.configs import teacher_student
from msp.train import build_meta_learner
from msp.train.evaluation import adapted_outputs
from msp.train.loop import meta_train

STEPS = 700


def _run(**overrides):
  config = teacher_student.get_config()
  config.image_size = 8
  config.meta.episodes, config.meta.support_size, config.meta.query_size = 2, 8, 8
  for key, value in overrides.items():
    section, leaf = key.split(".")
    config[section][leaf] = value
  learner = build_meta_learner(config)
  data = TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size,
                        config.teacher.alive_per_layer, seed=config.teacher.seed)
  rng = np.random.default_rng(0)
  m = config.meta
  batches = (data.meta_batch(rng, m.episodes, m.support_size, m.query_size) for _ in itertools.count())
  state, history = meta_train(learner, learner.init_state(jax.random.key(0)), batches, STEPS, 10, progress=False)
  test = data.batch(np.random.default_rng(1), 512)
  outputs = adapted_outputs(learner, state, data.batch(np.random.default_rng(2), m.support_size), test["image"])
  mse = float(np.mean([np.mean((np.asarray(outputs[t]) - test[t]) ** 2) for t in config.seen_tasks]))
  return history, mse, config


@pytest.mark.slow
def test_budget_mode_lands_near_its_target_without_breaking_a_layer():
  target = 0.5
  history, mse, config = _run(**{"budget.enabled": True, "budget.target": target, "budget.cost": "uniform",
                                  "meta.mode": "first_order"})
  final = history[-1]
  # The cap on zero channels in the outer prox keeps the budget from overshooting; the controller brings it to
  # within 5 points from below (measured: 46.9 % at 700 steps).
  assert target - 0.05 <= float(final["group_sparsity_total"]) <= target, final["group_sparsity_total"]
  # no layer ever dropped below its floor, and μ stayed a valid (non-negative) multiplier
  assert min(int(np.min(h["alive_channels"])) for h in history) >= config.safeguards.min_channels
  assert min(float(h["mu"]) for h in history) >= 0.0
  _, dense_mse, _ = _run(**{"sparsity.enabled": False, "meta.mode": "first_order"})
  # the pruned student stays within 1.5× the dense student's test error (both after adaptation)
  assert mse <= 1.5 * dense_mse, (mse, dense_mse)


def test_teacher_keeps_the_given_channels_per_layer():
  config = teacher_student.get_config("tiny")
  learner = build_meta_learner(config)
  data = TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size, (3, 2, 1), seed=0)
  alive = [int(np.sum(a)) for a in learner.spec.alive(data.variables["params"])]
  assert alive == [3, 2, 1]
  with pytest.raises(ValueError, match="one count in"):
    TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size, (3, 2), seed=0)
