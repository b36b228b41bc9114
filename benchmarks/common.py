"""Shared helpers for benchmarks: machine description and median timing of a compiled call (msp's, as the export
report uses them)."""
from typing import Callable

from msp.export.report import machine, median_latencies  # pylint: disable=unused-import (machine is re-exported)


def median_seconds(call: Callable[[], object], repeats: int, warmup: int = 1) -> float:
  """Median wall time of `call()` (blocked until ready) over `repeats` runs after `warmup` runs."""
  return median_latencies({"call": call}, repeats, warmup)["call"]
