"""Compiled memory of the meta-step at paper scale: inner steps K × remat × meta-gradient mode, no data needed.

python benchmarks/meta_step_memory.py [--config=experiments/configs/nyuv2.py:budget,paper] [--ks=1,3]
    [--modes=first_order,second_order]

Compiles `train_step` ahead of time from shapes alone (`MetaLearner.abstract_inputs`) for the config's meta-batch
(E episodes × (support + query) images of image_size²) and prints a markdown table of
`compiled.memory_analysis()` on this machine's backend: arguments (state + meta-batch), temporaries, and the
total the step holds at its peak as XLA plans it, arguments + outputs − aliased (the donated state) + temporaries.
XLA:CPU's plan differs from a GPU's or TPU's (other fusions, no cuDNN workspaces): treat CPU numbers as guidance.
"""
import itertools
import time

from absl import app, flags
from ml_collections import config_flags

from benchmarks.common import machine
from msp.train import build_meta_learner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/nyuv2.py:budget,paper", "Configuration.")
_KS = flags.DEFINE_list("ks", ["1", "3"], "Inner-step counts K.")
_MODES = flags.DEFINE_list("modes", ["first_order", "second_order"], "Meta-gradient modes (config.meta.mode).")

MIB = 2 ** 20


def compiled_memory(config) -> tuple[dict[str, int], float]:
  """({arguments, outputs, aliased, temporaries, total} in bytes, compile seconds) of `config`'s meta-step."""
  learner = build_meta_learner(config)
  start = time.perf_counter()
  stats = learner.train_step.lower(*learner.abstract_inputs()).compile().memory_analysis()
  seconds = time.perf_counter() - start
  memory = {"arguments": stats.argument_size_in_bytes, "outputs": stats.output_size_in_bytes,
            "aliased": stats.alias_size_in_bytes, "temporaries": stats.temp_size_in_bytes}
  memory["total"] = memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temporaries"]
  return memory, seconds


def main(argv):
  del argv
  base = _CONFIG.value
  m = base.meta
  print(f"Machine: {machine()}")
  print(f"Config: {base.model.backbone.block} backbone, stem {base.model.backbone.stem}, widths "
        f"{tuple(base.model.backbone.widths)}, heads {dict(base.model.get('head_kinds', {}))}, {base.image_size}² "
        f"input, E={m.episodes} episodes × (support {m.support_size} + query {m.query_size}), seen tasks "
        f"{tuple(base.seen_tasks)}, variant {base.variant}, episode loop {m.episode_loop}\n")
  print("| mode | K | remat | arguments (MiB) | temporaries (MiB) | total (MiB) | compile (s) |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for mode, k, remat in itertools.product(_MODES.value, [int(k) for k in _KS.value], (False, True)):
    config = base.copy_and_resolve_references()
    config.meta.mode, config.meta.inner_steps, config.meta.remat = mode, k, remat
    memory, seconds = compiled_memory(config)
    print(f"| {mode} | {k} | {'on' if remat else 'off'} | {memory['arguments'] / MIB:.0f} | "
          f"{memory['temporaries'] / MIB:.0f} | {memory['total'] / MIB:.0f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
