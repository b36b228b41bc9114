"""Time per meta-step and compiled temporary memory: mode × K × remat, and the episode-loop choice.

python benchmarks/meta_step.py [--config=experiments/configs/teacher_student.py] [--repeats=5] [--ks=1,3,8]

Prints a markdown table (the machine named) with the median step time after compilation and the compiled step's
temp memory (`compiled.memory_analysis().temp_size_in_bytes`), then the ratios memory(K=max)/memory(K=min) with
and without remat, then step time of each episode loop (unroll / map) relative to `unroll`.
"""
import itertools

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from msp import cli
from benchmarks.common import machine, median_seconds
from data_pipelines.teacher_student import TeacherStudent
from msp.parallel import shard_episodes
from msp.train import build_meta_learner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/teacher_student.py", "Base configuration.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per setting (median reported).")
_KS = flags.DEFINE_list("ks", ["1", "3", "8"], "Inner-step counts K.")


def measure(config, data) -> tuple[float, int]:
  """(median seconds per meta-step, temp bytes of the compiled step) for `config`."""
  learner = build_meta_learner(config)
  m = config.meta
  batch = shard_episodes(data.meta_batch(np.random.default_rng(0), m.episodes, m.support_size, m.query_size,
                                         m.task_sampling), learner.mesh)
  state = learner.init_state(jax.random.key(0))
  compiled = learner.train_step.lower(state, batch).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  holder = [state]

  def call():
    holder[0], metrics = compiled(holder[0], batch)
    return metrics

  return median_seconds(call, _REPEATS.value), temp


def main(argv):
  del argv
  base = _CONFIG.value
  learner = build_meta_learner(base)
  data = TeacherStudent(learner.model, learner.spec, base.seen_tasks, base.image_size,
                        base.teacher.alive_per_layer, seed=base.teacher.seed)
  ks = [int(k) for k in _KS.value]
  m = base.meta
  print(f"Machine: {machine()}")
  print(f"Config: {base.model.backbone.block} backbone widths {tuple(base.model.backbone.widths)}, "
        f"{base.image_size}² input, E={m.episodes} episodes × (support {m.support_size} + query {m.query_size}), "
        f"{len(base.seen_tasks)} tasks; median of {_REPEATS.value} steps after compilation\n")
  print("| mode | K | remat | ms / step | temp memory (MiB) |")
  print("| --- | --- | --- | --- | --- |")
  memory = {}
  for mode, k, remat in itertools.product(("second_order", "first_order"), ks, (False, True)):
    config = base.copy_and_resolve_references()
    config.meta.mode, config.meta.inner_steps, config.meta.remat = mode, k, remat
    seconds, temp = measure(config, data)
    memory[mode, k, remat] = temp
    print(f"| {mode} | {k} | {'on' if remat else 'off'} | {seconds * 1e3:.1f} | {temp / 2**20:.2f} |", flush=True)
  print()
  for mode in ("second_order", "first_order"):
    for remat in (False, True):
      ratio = memory[mode, ks[-1], remat] / memory[mode, ks[0], remat]
      print(f"{mode}, remat {'on ' if remat else 'off'}: memory(K={ks[-1]}) / memory(K={ks[0]}) = {ratio:.2f}")
  print("\n| episode loop | ms / step (second_order, K=1) | relative to unroll |")
  print("| --- | --- | --- |")
  times = {}
  for loop in ("unroll", "map"):
    config = base.copy_and_resolve_references()
    config.meta.episode_loop, config.meta.inner_steps = loop, 1
    times[loop] = measure(config, data)[0]
    print(f"| {loop} | {times[loop] * 1e3:.1f} | {times[loop] / times['unroll']:.2f} |", flush=True)


if __name__ == "__main__":
  cli.run(main)
