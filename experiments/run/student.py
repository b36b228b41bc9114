"""A student network meta-trained on a sparse teacher's random tensors, and its test error after the evaluation
protocol (experiments/teacher_student.py and the λ report run it)."""
import itertools

import jax
import ml_collections
import numpy as np

from data_pipelines.teacher_student import TeacherStudent
from msp.train import build_meta_learner
from msp.train.evaluation import protocol_variables
from msp.train.loop import meta_train
from msp.train.setup import MetaLearner
from msp.train.state import MetaTrainState

CALIBRATION_EXAMPLES = 256
TEST_EXAMPLES = 512


def train(config: ml_collections.ConfigDict, progress: bool = True, log_every: int | None = None,
          ) -> tuple[MetaLearner, TeacherStudent, MetaTrainState, list[dict]]:
  """Meta-trains a student on `config`'s teacher from `learner.init_state(jax.random.key(config.seed))` →
  (learner, data, final state, logged history)."""
  learner = build_meta_learner(config)
  data = TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size, seed=config.teacher.seed,
                        alive_per_layer=config.teacher.alive_per_layer, pool_size=config.teacher.pool_size)
  rng = np.random.default_rng(config.seed)
  m = config.meta
  batches = (data.meta_batch(rng, m.episodes, m.support_size, m.query_size, m.task_sampling)
             for _ in itertools.count())
  state, history = meta_train(learner, learner.init_state(jax.random.key(config.seed)), batches, config.steps,
                              config.log_every if log_every is None else log_every, progress=progress)
  return learner, data, state, history


def adapted_test_mse(learner: MetaLearner, state: MetaTrainState, data: TeacherStudent, seed: int,
                     ) -> dict[str, float]:
  """Per-task mean squared error on 512 fresh examples (targets have unit variance), scored by msp's evaluation
  protocol (`msp.train.evaluation.protocol_variables`): the run's K inner steps on one support batch of
  `meta.support_size` training examples, BatchNorm's averages recalibrated on 256 training examples (or the whole
  pool). Without the recalibration, budget-mode students measured 1.3–1.4× worse (the dense student alike)."""
  support = data.batch(np.random.default_rng(seed + 2000), learner.config.meta.support_size)
  calibration = data.batch(np.random.default_rng(seed + 3000),
                           min(CALIBRATION_EXAMPLES, learner.config.teacher.pool_size or CALIBRATION_EXAMPLES))
  variables = protocol_variables(learner, state, support, calibration["image"], CALIBRATION_EXAMPLES)
  test = data.fresh_batch(np.random.default_rng(seed + 1000), TEST_EXAMPLES)
  outputs = learner.model.apply(variables, test["image"], train=False)
  return {t.name: float(np.mean((np.asarray(outputs[t.name]) - test[t.name]) ** 2)) for t in learner.tasks}
