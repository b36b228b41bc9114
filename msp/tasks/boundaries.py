"""Boundary (edge) evaluation as the BSDS benchmark does it: thinning and one-to-one matching, in numpy / scipy.

`EdgeMetric` calls `boundary_counts` from inside its jitted update through `jax.pure_callback`;
everything here runs on the host on numpy arrays.

  `thin(masks)`                                   morphological thinning to one-pixel-wide curves, as MATLAB's
                                                  `bwmorph(mask, 'thin', Inf)` (which the BSDS / SEISM evaluation
                                                  applies to each thresholded prediction);
  `match_count(pred, true, radius)`               size of a maximum one-to-one matching between predicted and true
                                                  edge pixels at most `radius` apart (BSDS `correspondPixels`);
  `boundary_counts(levels, true, ...)`            per threshold, matched pairs and predicted pixels over a batch
                                                  (levels from `threshold_levels(prob, thresholds)`).

Coordinates are (row, column) pixel indices; distances are Euclidean, in pixels.
"""
import functools

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

# --- thinning --------------------------------------------------------------------------------------------------------
#
# The two-subiteration parallel thinning algorithm of Guo & Hall ("Parallel thinning with two-subiteration
# algorithms", CACM 32(3), 1989), as surveyed by Lam, Lee & Suen ("Thinning methodologies — a comprehensive survey",
# IEEE TPAMI 14(9), 1992, p. 879) and documented for MATLAB's bwmorph 'thin'. With x1 … x8 the eight neighbours of a
# foreground pixel p, starting with the east one and going counter-clockwise (x1 = E, x2 = NE, x3 = N, x4 = NW,
# x5 = W, x6 = SW, x7 = S, x8 = SE, rows growing downwards; x9 = x1), 1 = foreground:
#   G1: X_H(p) = 1, where X_H(p) = Σ_{i=1..4} b_i, b_i = 1 iff x_{2i−1} = 0 and (x_{2i} = 1 or x_{2i+1} = 1);
#   G2: 2 ≤ min(n1(p), n2(p)) ≤ 3, where n1(p) = Σ_{k=1..4} x_{2k−1} ∨ x_{2k}, n2(p) = Σ_{k=1..4} x_{2k} ∨ x_{2k+1};
#   G3: (x2 ∨ x3 ∨ ¬x8) ∧ x1 = 0;          G3': (x6 ∨ x7 ∨ ¬x4) ∧ x5 = 0.
# The first subiteration deletes, in parallel, every foreground pixel satisfying G1, G2 and G3; the second every one
# satisfying G1, G2 and G3'. The two alternate until an iteration (both) deletes nothing. Pixels outside the image
# are background. Each condition depends only on the 8-neighbourhood, so each subiteration is a 256-entry lookup
# table indexed by code = Σ_i x_i · 2^(i−1). (MATLAB's documentation also speaks of two checkerboard subfields; its
# implementation, like scikit-image's `thin`, applies each subiteration's table to every pixel, as done here. The
# result reproduces the worked example of scikit-image's documentation, see tests/test_metrics.py.)


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
  """(first, second): (256,) bool, True where a foreground pixel with that neighbourhood code is deleted."""
  bits = (np.arange(256)[:, None] >> np.arange(8)) & 1 == 1  # bits[code, i − 1] = x_i

  def x(i):
    return bits[:, (i - 1) % 8]

  crossings = sum((~x(2 * i - 1) & (x(2 * i) | x(2 * i + 1))).astype(int) for i in range(1, 5))
  n1 = sum((x(2 * k - 1) | x(2 * k)).astype(int) for k in range(1, 5))
  n2 = sum((x(2 * k) | x(2 * k + 1)).astype(int) for k in range(1, 5))
  g1 = crossings == 1
  g2 = (np.minimum(n1, n2) >= 2) & (np.minimum(n1, n2) <= 3)
  g3 = ~((x(2) | x(3) | ~x(8)) & x(1))
  g3_prime = ~((x(6) | x(7) | ~x(4)) & x(5))
  return g1 & g2 & g3, g1 & g2 & g3_prime


_THIN_TABLES = _thinning_tables()


def thin(masks: np.ndarray) -> np.ndarray:
  """(..., H, W) bool → (..., H, W) bool: each (H, W) image thinned to one-pixel-wide curves (bwmorph 'thin', Inf).

  The result is a subset of the input; 8-connected components and holes are kept (a blob without holes becomes a
  minimally connected stroke, one with holes a ring). Images are thinned independently but together. Every pixel's
  neighbourhood code is kept up to date as pixels are deleted, and each subiteration evaluates only the foreground
  pixels whose neighbourhood changed in one of the two previous subiterations (the others would decide as they did
  two subiterations ago; at the start, those with a background 4-neighbour, as G1 needs one), so the cost grows with
  the number of pixels deleted, not with the image area times the number of iterations.
  """
  masks = np.asarray(masks, bool)
  h, w = masks.shape[-2:]
  stride = w + 2
  # Every image gets its own one-pixel background border, so flat-index neighbours never cross images.
  padded = np.zeros((int(np.prod(masks.shape[:-2], dtype=np.int64)), h + 2, stride), np.uint8)
  padded[:, 1:-1, 1:-1] = masks.reshape(-1, h, w)
  flat = padded.reshape(-1)
  neighbours = np.array([1, 1 - stride, -stride, -1 - stride, -1, stride - 1, stride, stride + 1])  # x1 … x8
  # code[p] = Σ_i x_i(p) · 2^(i−1); a neighbour q = p + neighbours[i] sees p as its neighbour (i + 4) mod 8.
  code = np.zeros(flat.size, np.uint8)
  for bit, step in enumerate(neighbours):
    if step > 0:
      code[:-step] |= flat[step:] << bit
    else:
      code[-step:] |= flat[:step] << bit
  keep_bits = [np.uint8(0xFF ^ (1 << ((bit + 4) % 8))) for bit in range(8)]
  border = np.flatnonzero(flat.astype(bool) & ((code & 0b01010101) != 0b01010101))  # x1, x3, x5, x7 not all set
  stamp = np.zeros(flat.size, np.int32)

  def distinct(values):
    """The distinct entries of `values` (flat indices), without sorting: each keeps its last occurrence."""
    ids = np.arange(values.size, dtype=np.int32)
    stamp[values] = ids
    return values[stamp[values] == ids]

  # changed[j] (distinct): the pixels whose neighbourhood changed in subiteration j, the border standing for j = −1;
  # last_change[p]: the latest such j for pixel p.
  last_change = np.full(flat.size, -2, np.int32)
  last_change[border] = -1
  before, latest = border[:0], border  # changed[k − 2], changed[k − 1]
  subiteration = 0
  while True:
    # changed[k − 1] ∪ changed[k − 2], without the pixels in both twice.
    candidates = np.concatenate([latest, before[last_change[before] == subiteration - 2]])
    candidates = candidates[flat[candidates] != 0]
    if not candidates.size:
      break
    removed = candidates[_THIN_TABLES[subiteration % 2][code[candidates]]]
    flat[removed] = 0
    for bit, step in enumerate(neighbours):
      code[removed + step] &= keep_bits[bit]
    before, latest = latest, distinct((neighbours[:, None] + removed).reshape(-1))
    last_change[latest] = subiteration
    subiteration += 1
  return padded[:, 1:-1, 1:-1].astype(bool).reshape(masks.shape)


# --- matching --------------------------------------------------------------------------------------------------------

# Distances within this relative margin of the radius count as within it, so that a radius meant to be exactly an
# integer distance (e.g. max_dist · diagonal = 5) is not lost to rounding of max_dist · diagonal.
_RADIUS_MARGIN = 1e-9


@functools.lru_cache(maxsize=16)
def disk_offsets(radius: float) -> np.ndarray:
  """(K, 2) int64 (drow, dcol) with drow² + dcol² ≤ radius² (pixels), (0, 0) first; radius ≥ 0."""
  reach = int(np.floor(radius * (1 + _RADIUS_MARGIN)))
  d = np.arange(-reach, reach + 1)
  rows, cols = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
  squared = rows * rows + cols * cols
  keep = squared <= radius * radius * (1 + 2 * _RADIUS_MARGIN)
  order = np.argsort(squared[keep], kind="stable")
  return np.stack([rows[keep][order], cols[keep][order]], axis=1)


class _TrueEdges:
  """One image's true edge pixels, indexed for finding the predicted pixels within the matching radius of them."""

  def __init__(self, true: np.ndarray, offsets: np.ndarray):
    """true (H, W) bool; offsets (K, 2) from `disk_offsets`: the (drow, dcol) at which a pair is allowed."""
    h, w = true.shape
    self.reach = int(np.abs(offsets).max())
    self.stride = w + 2 * self.reach
    self.size = (h + 2 * self.reach) * self.stride
    # Positions are flat indices into the image padded by `reach` on every side, so a shifted position never wraps.
    self.shifts = (offsets[:, 0] * self.stride + offsets[:, 1]).astype(np.int32)
    rows, cols = np.nonzero(true)
    self.count = rows.size
    self.positions = self.flat(rows, cols)
    self.index = np.full(self.size, -1, np.int32)  # index[position] = id of the true pixel there, −1 elsewhere
    self.index[self.positions] = np.arange(self.count, dtype=np.int32)
    # Predicted pixels outside `near` (no true edge within the radius) cannot be matched. The margin only makes the
    # test generous: the pairs themselves come from `shifts`.
    if self.count and len(offsets) > 1:
      self.near = ndimage.distance_transform_edt(~true) <= np.sqrt((offsets ** 2).sum(1).max()) * (1 + 1e-6)
    else:
      self.near = true

  def flat(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Flat positions (int32) of image pixels (rows, cols) in the padded frame."""
    return ((rows + self.reach) * self.stride + cols + self.reach).astype(np.int32)


def _pairs(positions: np.ndarray, index: np.ndarray, shifts: np.ndarray, chunk: int = 1 << 22):
  """(ids of `positions`, ids found in `index`) for every shift with index[position + shift] ≥ 0, int arrays."""
  found, partners = [], []
  step = max(1, chunk // len(shifts))
  for start in range(0, positions.size, step):
    ids = index[positions[start:start + step, None] + shifts]
    i, k = np.nonzero(ids >= 0)
    found.append(i + start)
    partners.append(ids[i, k])
  return np.concatenate(found), np.concatenate(partners)


def _match(pred: np.ndarray, truth: _TrueEdges) -> int:
  """Size of a maximum one-to-one matching between the pixels of `pred` (H, W) bool and `truth`."""
  rows, cols = np.nonzero(pred & truth.near)
  if not rows.size:
    return 0
  if len(truth.shifts) == 1:  # radius < 1: a pixel can only match the true edge at the same pixel
    return rows.size
  positions = truth.flat(rows, cols)
  # Look up partners from the smaller side: each of its pixels tries every shift.
  if positions.size <= truth.count:
    pred_ids, true_ids = _pairs(positions, truth.index, truth.shifts)
  else:
    index = np.full(truth.size, -1, np.int32)
    index[positions] = np.arange(positions.size, dtype=np.int32)
    true_ids, pred_ids = _pairs(truth.positions, index, truth.shifts)  # the disk is symmetric: ± shifts alike
  return _maximum_matching(pred_ids, true_ids, positions.size, truth.count)


def _compress(ids: np.ndarray, size: int) -> tuple[np.ndarray, int]:
  """ids in [0, size) renumbered 0 … n−1 in increasing order, and n, the number of distinct ids."""
  present = np.zeros(size, bool)
  present[ids] = True
  return (np.cumsum(present) - 1)[ids], int(np.count_nonzero(present))


def _maximum_matching(left: np.ndarray, right: np.ndarray, num_left: int, num_right: int) -> int:
  """Size of a maximum matching of the bipartite graph with edges (left[e], right[e]), ids in [0, num_left) and
  [0, num_right): the maximum flow from a source through every left vertex, edge and right vertex to a sink, all of
  capacity 1, by Dinic's algorithm (O(E √V) on such unit networks)."""
  if not left.size:
    return 0
  # Only vertices with an edge take part: compress both sides to those.
  left, n = _compress(left, num_left)
  right, m = _compress(right, num_right)
  source, sink = 0, n + m + 1
  tails = np.concatenate([np.full(n, source), 1 + left, 1 + n + np.arange(m)])
  heads = np.concatenate([1 + np.arange(n), 1 + n + right, np.full(m, sink)])
  network = sparse.csr_matrix((np.ones(tails.size, np.int32), (tails, heads)), shape=(n + m + 2, n + m + 2))
  return int(csgraph.maximum_flow(network, source, sink, method="dinic").flow_value)


def match_count(pred: np.ndarray, true: np.ndarray, radius: float) -> int:
  """Size of a maximum one-to-one matching of predicted to true edge pixels at Euclidean distance ≤ radius.

  pred, true: (H, W) bool; radius in pixels (≥ 0). Each predicted pixel matches at most one true pixel and vice
  versa; among all such matchings one with the most pairs is found, as a unit-capacity maximum flow (Dinic,
  `scipy.sparse.csgraph.maximum_flow`; scipy's `maximum_bipartite_matching` gives the same count but took from
  0.2 to 5 s on some 3,000-pixel images where this takes 10 ms). The BSDS `correspondPixels` solves a minimum-cost
  assignment whose outlier cost makes it, too, match as many pixels as possible; only the number of pairs matters
  here.
  """
  return _match(np.asarray(pred, bool), _TrueEdges(np.asarray(true, bool), disk_offsets(float(radius))))


def threshold_levels(prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
  """prob (...) and increasing thresholds (T,) → (...) int64 in [0, T]: how many thresholds are ≤ each probability.

  A pixel is a predicted edge at threshold k (0-based) iff prob ≥ thresholds[k] iff its level is > k.
  """
  return np.searchsorted(np.asarray(thresholds), np.asarray(prob), side="right")


def boundary_counts(levels: np.ndarray, true: np.ndarray, num_thresholds: int, max_dist: float,
                    thin_predictions: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Per threshold, summed over a batch: (matched, predicted), each (num_thresholds,) int64.

  levels: (B, H, W) ints in [0, T], T = num_thresholds, from `threshold_levels` (the pixel is a predicted edge at
  threshold k, 0-based, iff levels > k); true: (B, H, W) bool true edges (not thinned); max_dist: the matching radius
  as a fraction of the image diagonal √(H² + W²). With `thin_predictions` each thresholded map is thinned (`thin`)
  before matching. predicted counts the (thinned) predicted pixels, matched the pairs of a maximum one-to-one
  matching (`match_count`) in each image. A threshold whose map of an image is empty, or equal to the previous
  threshold's, is neither thinned nor matched again.
  """
  levels, true = np.asarray(levels), np.asarray(true, bool)
  b, h, w = levels.shape
  t = int(num_thresholds)
  matched, predicted = np.zeros((b, t), np.int64), np.zeros((b, t), np.int64)
  if not b or not t:
    return matched.sum(0), predicted.sum(0)
  flat_levels = levels.reshape(b, -1).astype(np.int64)
  # The map at threshold k differs from the one at k − 1 exactly where levels == k; it is empty from k = max level on.
  per_level = np.bincount((flat_levels + (t + 1) * np.arange(b)[:, None]).ravel(),
                          minlength=b * (t + 1)).reshape(b, t + 1)
  top = flat_levels.max(axis=1)
  offsets = disk_offsets(max_dist * float(np.hypot(h, w)))
  truths = [_TrueEdges(true[i], offsets) for i in range(b)]
  for k in range(t):
    nonempty = k < top
    fresh = nonempty & (per_level[:, k] > 0) if k else nonempty
    same = nonempty & ~fresh
    matched[same, k], predicted[same, k] = matched[same, k - 1], predicted[same, k - 1]
    images = np.flatnonzero(fresh)
    if not images.size:
      continue
    maps = levels[images] > k
    if thin_predictions:
      maps = thin(maps)
    predicted[images, k] = maps.sum(axis=(1, 2))
    matched[images, k] = [_match(m, truths[i]) for m, i in zip(maps, images)]
  return matched.sum(0), predicted.sum(0)
