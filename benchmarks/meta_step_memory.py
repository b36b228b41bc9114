"""Compiled memory of the meta-step at paper scale: inner steps K × remat × meta-gradient mode, no data needed.

python benchmarks/meta_step_memory.py [--config=experiments/configs/nyuv2.py:budget,paper] [--ks=1,3]
    [--modes=first_order,second_order] [--remat=off,on] [--execute=STEPS]

Compiles `train_step` ahead of time from shapes alone (`MetaLearner.abstract_inputs`) for the config's meta-batch
(E episodes × (support + query) images of image_size²) and prints a markdown table of
`compiled.memory_analysis()` on this machine's backend: arguments (state + meta-batch), temporaries, and the
total the step holds at its peak as XLA plans it, arguments + outputs − aliased (the donated state) + temporaries.
XLA:CPU's plan differs from a GPU's or TPU's (other fusions, no cuDNN workspaces): treat CPU numbers as guidance.
With `--execute=STEPS` it also runs the compiled step STEPS times on a fresh state and a meta-batch of constant
images (labels 0) and adds the median step time and the device's peak memory as its allocator reports it (GPU and
TPU; one cell per process gives each cell's own peak).
"""
import itertools
import time

import jax
import jax.numpy as jnp
from absl import flags
from ml_collections import config_flags

from msp import cli
from benchmarks.common import machine, median_seconds
from msp.train import build_meta_learner

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/nyuv2.py:budget,paper", "Configuration.")
_KS = flags.DEFINE_list("ks", ["1", "3"], "Inner-step counts K.")
_MODES = flags.DEFINE_list("modes", ["first_order", "second_order"], "Meta-gradient modes (config.meta.mode).")
_REMAT = flags.DEFINE_list("remat", ["off", "on"], "Rematerialisation of the inner loop (config.meta.remat).")
_EXECUTE = flags.DEFINE_integer("execute", 0, "Run the compiled step this many times (0: compile only).")

MIB = 2 ** 20


def compiled_memory(config, execute: int) -> dict[str, float]:
  """`config`'s meta-step compiled: {arguments, outputs, aliased, temporaries, total} in bytes and `compile_s`;
  with `execute` > 0 also `step_s` (median of `execute` steps) and `peak` (device bytes, None where unreported)."""
  learner = build_meta_learner(config)
  start = time.perf_counter()
  abstract_state, abstract_batch = learner.abstract_inputs()
  compiled = learner.train_step.lower(abstract_state, abstract_batch).compile()
  stats = compiled.memory_analysis()
  memory = {"arguments": stats.argument_size_in_bytes, "outputs": stats.output_size_in_bytes,
            "aliased": stats.alias_size_in_bytes, "temporaries": stats.temp_size_in_bytes,
            "compile_s": time.perf_counter() - start}
  memory["total"] = memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temporaries"]
  if execute:
    state = learner.init_state(jax.random.key(0))
    batch = jax.tree.map(lambda s: jax.device_put(jnp.full(s.shape, 0.5 if s.dtype == jnp.float32 else 0, s.dtype),
                                                  s.sharding), abstract_batch)
    holder = [state]

    def step():
      holder[0], metrics = compiled(holder[0], batch)
      return metrics

    memory["step_s"] = median_seconds(step, repeats=execute)
    device_stats = jax.devices()[0].memory_stats() or {}
    memory["peak"] = device_stats.get("peak_bytes_in_use")
  return memory


def main(argv):
  del argv
  base = _CONFIG.value
  m = base.meta
  print(f"Machine: {machine()}")
  print(f"Config: {base.model.backbone.block} backbone, stem {base.model.backbone.stem}, widths "
        f"{tuple(base.model.backbone.widths)}, heads {dict(base.model.get('head_kinds', {}))}, {base.image_size}² "
        f"input, E={m.episodes} episodes × (support {m.support_size} + query {m.query_size}), seen tasks "
        f"{tuple(base.seen_tasks)}, variant {base.variant}, episode loop {m.episode_loop}\n")
  print("| mode | K | remat | arguments (MiB) | temporaries (MiB) | total (MiB) | compile (s) | step (s) | "
        "peak (MiB) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for mode, k, remat in itertools.product(_MODES.value, [int(k) for k in _KS.value], _REMAT.value):
    config = base.copy_and_resolve_references()
    config.meta.mode, config.meta.inner_steps, config.meta.remat = mode, k, remat == "on"
    memory = compiled_memory(config, _EXECUTE.value)
    step = f"{memory['step_s']:.3f}" if "step_s" in memory else "—"
    peak = f"{memory['peak'] / MIB:.0f}" if memory.get("peak") else "—"
    print(f"| {mode} | {k} | {remat} | {memory['arguments'] / MIB:.0f} | {memory['temporaries'] / MIB:.0f} | "
          f"{memory['total'] / MIB:.0f} | {memory['compile_s']:.0f} | {step} | {peak} |", flush=True)


if __name__ == "__main__":
  cli.run(main)
