"""Seconds to evaluate edges with `EdgeMetric` (jitted update + compute), per matching radius, on this machine.

python benchmarks/edge_metric.py [--sizes=500x64x64,16x480x640] [--batch_sizes=50,8] [--max_dists=0.0075,0.011]
                                 [--regimes=sparse,dense] [--thresholds=99]

Run it under `taskset -c 0` for one core: the matching runs on the host in one thread (numpy / scipy). Data: true edges are the boundaries of random Voronoi label maps (1 pixel wide); the
logits are the edges blurred (σ 1.2 pixels) plus Gaussian noise, in two regimes:
  sparse  a good detector: sigmoid near 1 on and next to edges, mostly below 0.05 elsewhere;
  dense   a poor one: probabilities spread over (0, 1) everywhere, so low thresholds predict most of the image and
          the thinning has large regions to thin (the slow case).
Times exclude compilation (one untimed update first); the images are fed in batches as the evaluation loop does.
"""
import time

import jax
import numpy as np
from absl import flags
from scipy import ndimage

from msp import cli
from benchmarks.common import machine
from msp.tasks import metrics

_SIZES = flags.DEFINE_list("sizes", ["500x64x64", "16x480x640"], "Datasets as NxHxW.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["50", "8"], "Batch size per dataset in --sizes.")
_MAX_DISTS = flags.DEFINE_list("max_dists", ["0.0075", "0.011"], "bsds radii (fractions of the diagonal) timed.")
_REGIMES = flags.DEFINE_list("regimes", ["sparse", "dense"], "Prediction regimes (see the docstring).")
_THRESHOLDS = flags.DEFINE_integer("thresholds", 99, "Thresholds of the ODS sweep.")


def voronoi_edges(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
  """(n, h, w) bool: pixels whose label differs from the one above or to the left, for random Voronoi labels."""
  out = np.zeros((n, h, w), bool)
  rows, cols = np.mgrid[:h, :w]
  for i in range(n):
    k = rng.integers(4, 12)
    centre_rows, centre_cols = rng.uniform(0, h, k), rng.uniform(0, w, k)
    labels = np.argmin((rows[..., None] - centre_rows) ** 2 + (cols[..., None] - centre_cols) ** 2, axis=-1)
    out[i, 1:] |= labels[1:] != labels[:-1]
    out[i, :, 1:] |= labels[:, 1:] != labels[:, :-1]
  return out


def logits_for(rng: np.random.Generator, edges: np.ndarray, regime: str) -> np.ndarray:
  """(n, h, w, 1) float32 logits of a detector of `edges` (n, h, w) in `regime`."""
  near = ndimage.gaussian_filter(edges.astype(np.float64), sigma=(0, 1.2, 1.2))
  near /= near.max()
  noise = rng.normal(size=edges.shape)
  if regime == "sparse":
    logits = 9.0 * near - 4.5 + 0.8 * noise
  elif regime == "dense":
    logits = 2.0 * near + noise
  else:
    raise ValueError(f"regime {regime!r}; choose sparse or dense")
  return logits.astype(np.float32)[..., None]


def seconds(metric: metrics.EdgeMetric, logits: np.ndarray, edges: np.ndarray, batch: int) -> tuple[float, float]:
  """(seconds for every batch's jitted update and the compute, ods_f)."""
  update = jax.jit(metric.update)
  jax.block_until_ready(update(metric.init(), logits[:batch], edges[:batch]))  # compiles
  start = time.perf_counter()
  state = metric.init()
  for i in range(0, len(logits), batch):
    state = update(state, logits[i:i + batch], edges[i:i + batch])
  ods_f = metric.compute(state)["ods_f"]
  return time.perf_counter() - start, ods_f


def main(argv):
  del argv
  print(f"Machine: {machine()}\n")
  print("| images | batch | regime | convention | seconds | ods_f |")
  print("| --- | --- | --- | --- | --- | --- |")
  for size, batch in zip(_SIZES.value, _BATCH_SIZES.value):
    n, h, w = (int(x) for x in size.split("x"))
    rng = np.random.default_rng(0)
    true = voronoi_edges(rng, n, h, w)
    for regime in _REGIMES.value:
      logits = logits_for(rng, true, regime)
      edges = true.astype(np.float32)[..., None]
      options = [dict(max_dist=float(d)) for d in _MAX_DISTS.value]
      options.append(dict(max_dist=float(_MAX_DISTS.value[0]), thin=False))
      for option in options:
        metric = metrics.EdgeMetric(thresholds=_THRESHOLDS.value, **option)
        took, ods_f = seconds(metric, logits, edges, int(batch))
        print(f"| {n} × {h}×{w} | {batch} | {regime} | {metric.convention.removeprefix('ods_f: ')} | {took:.2f} | "
              f"{ods_f:.4f} |", flush=True)


if __name__ == "__main__":
  cli.run(main)
