"""Shared helpers for benchmarks: machine description (msp's, as export reports print it) and median timing of a
compiled call."""
import time
from typing import Callable

import jax
import numpy as np

from msp.export.report import machine  # pylint: disable=unused-import (re-exported for the benchmarks)


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
