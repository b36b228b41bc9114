"""Shared helpers for benchmarks: machine description and median timing of a compiled call."""
import os
import platform
import time
from typing import Callable

import jax
import numpy as np


def machine() -> str:
  """One line naming the hardware, for every table a benchmark prints."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{jax.devices()[0].platform.upper()} × {len(jax.devices())} ({cpu}, {os.cpu_count()} cores), jax {jax.__version__}"


def median_seconds(call: Callable[[], object], repeats: int, warmup: int = 1) -> float:
  """Median wall time of `call()` (blocked until ready) over `repeats` runs after `warmup` runs."""
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return float(np.median(times))
