"""Short meta-training on teacher–student random tensors; prints λ per layer, sparsity and test error.

python experiments/teacher_student.py [--config=experiments/configs/teacher_student.py:budget] [--config.steps=N]
"""
import itertools

import jax
import numpy as np
from absl import app
from ml_collections import config_flags

from data_pipelines.teacher_student import TeacherStudent
from msp.train import build_meta_learner
from msp.train.evaluation import adapted_outputs
from msp.train.loop import meta_train

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/teacher_student.py",
                                          "Run configuration (file[:variant]).")


def test_mse(learner, state, support, batch) -> dict[str, float]:
  """Per-task mean squared error after adapting to `support` (K inner steps, as the meta-objective trains)."""
  outputs = adapted_outputs(learner, state, support, batch["image"])
  return {t.name: float(np.mean((np.asarray(outputs[t.name]) - batch[t.name]) ** 2)) for t in learner.tasks}


def main(argv):
  del argv
  config = _CONFIG.value
  learner = build_meta_learner(config)
  data = TeacherStudent(learner.model, learner.spec, config.seen_tasks, config.image_size, seed=config.teacher.seed,
                        alive_per_layer=config.teacher.alive_per_layer, pool_size=config.teacher.pool_size)
  rng = np.random.default_rng(config.seed)
  test_batch = data.batch(np.random.default_rng(config.seed + 1000), 256)
  support = data.batch(np.random.default_rng(config.seed + 2000), config.meta.support_size)
  state = learner.init_state(jax.random.key(config.seed))
  before = test_mse(learner, state, support, test_batch)
  m = config.meta
  batches = (data.meta_batch(rng, m.episodes, m.support_size, m.query_size, m.task_sampling)
             for _ in itertools.count())
  state, history = meta_train(learner, state, batches, config.steps, config.log_every)
  after = test_mse(learner, state, support, test_batch)
  last = history[-1]

  print(f"\nMeta-sparsity on teacher–student data: {config.steps} outer steps, mode={m.mode}, K={m.inner_steps}, "
        f"teacher keeps {tuple(config.teacher.alive_per_layer)} channels per layer")
  print(f"{'layer':32s} {'lambda':>10s} {'alive':>7s} {'group sparsity':>15s}")
  for i, layer in enumerate(learner.spec.layers):
    print(f"{layer.name:32s} {last['lambda'][i]:10.3e} {int(last['alive_channels'][i]):4d}/{layer.num_groups:<3d}"
          f"{last['group_sparsity'][i]:14.1%}")
  print("alive channels per layer over the outer steps: " + ", ".join(
      f"{h['step']}: {np.asarray(h['alive_channels']).tolist()}" for h in history))
  print(f"total group sparsity {last['group_sparsity_total']:.1%}, parameter sparsity {last['param_sparsity']:.1%}, "
        f"backbone FLOPs kept {last['flops_kept']:.1%}")
  if config.budget.enabled:
    print(f"budget: {config.budget.target_kind} target {config.budget.target:.0%}, final mu {float(last['mu']):.3g}")
  print(f"{'task':10s} {'test MSE before':>16s} {'after':>8s}   (after K inner steps on {config.meta.support_size} support examples)")
  for name in before:
    print(f"{name:10s} {before[name]:16.4f} {after[name]:8.4f}")


if __name__ == "__main__":
  app.run(main)
