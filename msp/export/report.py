"""What pruning buys on the machine at hand: parameters, FLOPs and measured latency, dense against pruned.

Latency is the median wall time of a jit-compiled inference forward (`block_until_ready`) over `repeats` calls
after `warmup` calls, measured round-robin over the networks so that a change in the machine's load hits all alike.
The ideal speedup is the FLOP ratio; `speedup ÷ FLOP ratio` says how much of it the hardware delivers.
"""
import os
import platform
import time
from typing import Callable, Sequence

import jax
import numpy as np

from msp.models import MultiTaskNet
from msp.sparsity import CostModel, GroupSpec


def machine() -> str:
  """One line naming the hardware and the jax version."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  device = jax.local_devices()[0]
  kind = "" if device.device_kind.lower() == device.platform else f" {device.device_kind}"
  return (f"{device.platform.upper()}{kind} × {len(jax.local_devices())} ({cpu}, {os.cpu_count()} cores), "
          f"jax {jax.__version__}")


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays."""
  return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))


def network_costs(model: MultiTaskNet, variables: dict, image_size: int) -> dict[str, float]:
  """Sizes of `model` with `variables` for one (image_size², 3) image.

  Returns params (all trainable scalars), backbone_params, backbone_flops (2·multiply-adds of the backbone's convs,
  `msp.sparsity.CostModel`) and flops (the whole inference forward, XLA's cost analysis of the compiled function).
  """
  spec = GroupSpec.from_params(variables["params"])
  compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, jax.ShapeDtypeStruct((1, image_size, image_size, 3), np.float32)).compile()
  return {"params": count_params(variables["params"]),
          "backbone_params": count_params(variables["params"]["backbone"]),
          "backbone_flops": CostModel.from_model(model, spec, image_size).dense_flops,
          "flops": float(compiled.cost_analysis()["flops"])}


def median_latencies(calls: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
  """{name: median seconds of `call()` until ready} over `repeats` round-robin rounds after `warmup` rounds."""
  times = {name: [] for name in calls}
  for round_ in range(warmup + repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(call())
      if round_ >= warmup:
        times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def forward_latencies(networks: dict[str, tuple[MultiTaskNet, dict]], image_size: int, batch_sizes: Sequence[int],
                      repeats: int, warmup: int) -> dict[str, dict[int, float]]:
  """{network name: {batch size: median seconds}} of each (model, variables)'s jitted inference forward on
  uniform random images (batch, image_size, image_size, 3)."""
  latencies = {name: {} for name in networks}
  for batch in batch_sizes:
    images = jax.random.uniform(jax.random.key(batch), (batch, image_size, image_size, 3))
    calls = {}
    for name, (model, variables) in networks.items():
      forward = jax.jit(lambda v, x, model=model: model.apply(v, x, train=False))
      calls[name] = lambda forward=forward, variables=variables: forward(variables, images)
    for name, seconds in median_latencies(calls, repeats, warmup).items():
      latencies[name][batch] = seconds
  return latencies


def build_report(costs: dict[str, dict], latencies: dict[str, dict[int, float]], **details) -> dict:
  """The JSON report of a dense and a pruned network.

  Args:
    costs: {"dense": network_costs(...), "pruned": network_costs(...)}.
    latencies: {"dense": {batch: seconds}, "pruned": {batch: seconds}}.
    **details: JSON-able entries copied into the report (e.g. machine, repeats, max_abs_difference).

  Returns:
    {"dense"/"pruned": costs + latency_ms {batch: ms}, "ratio": dense ÷ pruned of each cost, "speedup"
    {batch: dense ÷ pruned latency}, "speedup_over_flop_ratio" {batch: speedup ÷ ratio of `flops`}, **details}.
  """
  networks = {name: {**costs[name], "latency_ms": {b: s * 1e3 for b, s in latencies[name].items()}}
              for name in ("dense", "pruned")}
  ratio = {key: costs["dense"][key] / costs["pruned"][key] for key in costs["dense"]}
  speedup = {b: latencies["dense"][b] / latencies["pruned"][b] for b in latencies["dense"]}
  return {**networks, "ratio": ratio, "speedup": speedup,
          "speedup_over_flop_ratio": {b: s / ratio["flops"] for b, s in speedup.items()}, **details}


def report_markdown(report: dict) -> str:
  """Markdown: `build_report`'s dense and pruned columns and their ratio, how it was measured, the exactness check
  and the kept channels per conv (from the details machine, repeats, warmup, tolerance, max_abs_difference,
  exported_max_abs_difference and channels)."""
  dense, pruned, ratio = report["dense"], report["pruned"], report["ratio"]
  rows = [("parameters", "params", "{:,}"), ("backbone parameters", "backbone_params", "{:,}"),
          ("GFLOPs / image (whole forward, XLA)", "flops", "{:.4g}"),
          ("GFLOPs / image (backbone convs)", "backbone_flops", "{:.4g}")]
  scale = lambda key, v: v / 1e9 if "flops" in key else v
  lines = ["| | dense | pruned | dense ÷ pruned |", "|---|---|---|---|"]
  lines += [f"| {label} | {fmt.format(scale(key, dense[key]))} | {fmt.format(scale(key, pruned[key]))} | "
            f"{ratio[key]:.2f} |" for label, key, fmt in rows]
  lines += [f"| latency, batch {b} (ms) | {dense['latency_ms'][b]:.2f} | {pruned['latency_ms'][b]:.2f} | "
            f"{report['speedup'][b]:.2f} (÷ FLOP ratio: {report['speedup_over_flop_ratio'][b]:.2f}) |"
            for b in dense["latency_ms"]]
  differences = lambda key: ", ".join(f"{task} {d:.2g}" for task, d in report[key].items())
  lines += ["", f"Latency: median of {report['repeats']} jit-compiled forwards after {report['warmup']} warm-up, on "
                f"{report['machine']}.",
            f"Exactness, max |dense − pruned| per task on random images: {differences('max_abs_difference')}; "
            f"the written jax.export function: {differences('exported_max_abs_difference')} "
            f"(tolerance {report['tolerance']:g}).",
            "", "| conv | dense channels | kept |", "|---|---|---|"]
  lines += [f"| {conv} | {c['dense']} | {c['kept']} |" for conv, c in report["channels"].items()]
  return "\n".join(lines)
