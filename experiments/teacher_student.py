"""Short meta-training on teacher–student random tensors; prints λ per layer, sparsity and test error.

python experiments/teacher_student.py [--config=experiments/configs/teacher_student.py:budget] [--config.steps=N]
"""
import jax
import numpy as np
from absl import flags

from experiments.run import script
from experiments.run.student import adapted_test_mse, train


def main(argv):
  script.start(argv)
  config = flags.FLAGS["config"].value
  with script.clear_errors():
    learner, data, state, history = train(config)
    initial = learner.init_state(jax.random.key(config.seed))  # the state train() started from (deterministic)
    before, after = (adapted_test_mse(learner, s, data, config.seed) for s in (initial, state))
  last, m = history[-1], config.meta

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
    print(f"budget: {config.budget.target_kind} target {config.budget.target:.1%}, final mu {float(last['mu']):.3g}")
  print(f"{'task':10s} {'test MSE before':>16s} {'after':>8s}   (after K inner steps on {m.support_size} support "
        f"examples, BatchNorm recalibrated)")
  for name in before:
    print(f"{name:10s} {before[name]:16.4f} {after[name]:8.4f}")
  print(f"{'mean':10s} {np.mean(list(before.values())):16.4f} {np.mean(list(after.values())):8.4f}")


if __name__ == "__main__":
  script.define_config("experiments/configs/teacher_student.py", "Run configuration (file[:variant]).")
  script.run(main)
