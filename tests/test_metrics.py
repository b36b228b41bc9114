"""Streaming metrics against independent numpy implementations written here, hand-worked cases, batching and merge."""
import dataclasses
import functools
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from scipy import ndimage, optimize

from msp.tasks import boundaries, build_task, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KINDS = {
    "segmentation": {"num_classes": 4},
    "depth": {},
    "normals": {},
    "edges": {},
    "attributes": {"num_attributes": 4},
    "regression": {"channels": 2},
}


@functools.cache
def _jit_update(metric):
  return jax.jit(metric.update)


def _accumulate(metric, batches):
  """Updates over (output, target) batches from the empty state, under jax.jit (as every test here runs them)."""
  state = metric.init()
  for output, target in batches:
    state = _jit_update(metric)(state, output, target)
  return state


def _split(output, target, parts):
  return list(zip(np.array_split(output, parts), np.array_split(target, parts)))


def _assert_close(got, want, atol=1e-6, rtol=1e-5):
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], atol=atol, rtol=rtol, err_msg=key)


# --- random data with ignored / invalid entries: n examples of (raw output, target), float32 -----------------------

def _segmentation_data(rng, n):
  logits = rng.normal(size=(n, 5, 6, 4)).astype(np.float32)
  logits[..., 3] -= 20.0  # class 3 is never predicted and (below) never labelled: mIoU must skip it
  labels = rng.integers(0, 3, size=(n, 5, 6))
  labels[rng.random(labels.shape) < 0.2] = -1
  return logits, labels


def _depth_data(rng, n):
  depth = rng.uniform(0.5, 5.0, size=(n, 6, 7, 1)).astype(np.float32)
  pred = (depth * np.exp(rng.normal(scale=0.3, size=depth.shape))).astype(np.float32)
  pred[rng.random(pred.shape) < 0.1] = -0.5
  pred[rng.random(pred.shape) < 0.05] = 0.0
  depth[rng.random(depth.shape) < 0.2] = 0.0
  return pred, depth


def _normals_data(rng, n):
  normals = rng.normal(size=(n, 6, 7, 3))
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  raw = 2.0 * normals + rng.normal(size=normals.shape)  # angles spread over roughly 0°–90°
  normals[rng.random(normals.shape[:-1]) < 0.2] = 0.0
  return raw.astype(np.float32), normals.astype(np.float32)


def _edges_data(rng, n):
  edges = (rng.random((n, 10, 12, 1)) < 0.15).astype(np.float32)
  logits = 2.5 * np.roll(edges, 1, axis=2) + rng.normal(size=edges.shape)  # right answers, one pixel off
  return logits.astype(np.float32), edges


def _attributes_data(rng, n):
  logits = rng.normal(size=(3 * n, 4)).astype(np.float32)
  labels = (rng.random(logits.shape) < 0.4).astype(np.float32)
  labels[:, 3] = 0.0  # attribute 3: never present and never predicted, F1's zero_division case
  logits[:, 3] = -np.abs(logits[:, 3])
  return logits, labels


def _regression_data(rng, n):
  return rng.normal(size=(n, 3, 4, 2)).astype(np.float32), rng.normal(size=(n, 3, 4, 2)).astype(np.float32)


DATA = {"segmentation": _segmentation_data, "depth": _depth_data, "normals": _normals_data, "edges": _edges_data,
        "attributes": _attributes_data, "regression": _regression_data}


# --- independent numpy implementations ------------------------------------------------------------------------------

def _numpy_segmentation(logits, labels, num_classes, ignore_index=-1):
  pred, valid = logits.argmax(-1), labels != ignore_index
  ious = []
  for c in range(num_classes):
    p, g = (pred == c) & valid, (labels == c) & valid
    if np.sum(p | g):
      ious.append(np.sum(p & g) / np.sum(p | g))
  return {"miou": np.mean(ious), "pixel_acc": np.mean(pred[valid] == labels[valid])}


def _numpy_depth(pred, depth):
  valid = depth > 0
  p, g = pred[valid].astype(np.float64), depth[valid].astype(np.float64)
  with np.errstate(divide="ignore"):
    ratio = np.where(p > 0, np.maximum(p / g, g / p), np.inf)
  return {"abs_err": np.mean(np.abs(p - g)), "rel_err": np.mean(np.abs(p - g) / g),
          "rmse": np.sqrt(np.mean((p - g) ** 2)), "delta1": np.mean(ratio < 1.25)}


def _numpy_angles(raw, normals):
  valid = np.linalg.norm(normals, axis=-1) > 0
  p, g = raw[valid].astype(np.float64), normals[valid].astype(np.float64)
  cos = np.einsum("ij,ij->i", p, g) / (np.linalg.norm(p, axis=-1) * np.linalg.norm(g, axis=-1))
  return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _numpy_normals(raw, normals):
  angles = _numpy_angles(raw, normals)
  return {"angle_mean": np.mean(angles), "angle_median": np.median(angles),
          "within_11.25": np.mean(angles < 11.25), "within_22.5": np.mean(angles < 22.5),
          "within_30": np.mean(angles < 30)}


def _slow_thin(mask):
  """Guo–Hall two-subiteration thinning written pixel by pixel from its published conditions (MATLAB's bwmorph
  'thin' documentation): x1 … x8 = the neighbours E, NE, N, NW, W, SW, S, SE (counter-clockwise from east, rows
  growing downwards), x9 = x1, outside the image = 0. Subiteration 1 deletes, all at once, the pixels meeting
  G1, G2, G3; subiteration 2 those meeting G1, G2, G3'; repeated until an iteration deletes nothing."""
  img = np.array(mask, bool)
  h, w = img.shape

  def x_of(r, c):
    around = [(r, c + 1), (r - 1, c + 1), (r - 1, c), (r - 1, c - 1), (r, c - 1), (r + 1, c - 1), (r + 1, c),
              (r + 1, c + 1)]
    values = [int(0 <= y < h and 0 <= z < w and img[y, z]) for y, z in around]
    return [None] + values + values[:1]  # x[1] … x[9], 1-based as in the paper

  def deletable(x, second):
    g1 = sum(1 for i in range(1, 5) if x[2 * i - 1] == 0 and (x[2 * i] == 1 or x[2 * i + 1] == 1)) == 1
    n1 = sum(1 for k in range(1, 5) if x[2 * k - 1] or x[2 * k])
    n2 = sum(1 for k in range(1, 5) if x[2 * k] or x[2 * k + 1])
    g2 = 2 <= min(n1, n2) <= 3
    if second:
      g3 = not ((x[6] or x[7] or not x[4]) and x[5])
    else:
      g3 = not ((x[2] or x[3] or not x[8]) and x[1])
    return g1 and g2 and g3

  while True:
    changed = False
    for second in (False, True):
      doomed = [(r, c) for r, c in zip(*np.nonzero(img)) if deletable(x_of(r, c), second)]
      for r, c in doomed:
        img[r, c] = False
      changed = changed or bool(doomed)
    if not changed:
      return img


def _brute_matching(pred, true, squared_radius):
  """Maximum one-to-one matching of predicted to true pixels at squared distance ≤ squared_radius, as an assignment
  maximising the number of allowed pairs (scipy's Hungarian solver on a 0/1 matrix)."""
  p, g = np.argwhere(pred), np.argwhere(true)
  if not len(p) or not len(g):
    return 0
  allowed = ((p[:, None, :] - g[None, :, :]) ** 2).sum(-1) <= squared_radius
  rows, cols = optimize.linear_sum_assignment(allowed, maximize=True)
  return int(allowed[rows, cols].sum())


def _numpy_edges_bsds(logits, edges, thresholds=99, max_dist=0.0075, thin=True):
  prob = 1.0 / (1.0 + np.exp(-logits[..., 0].astype(np.float64)))
  true = edges[..., 0] > 0
  squared_radius = (max_dist * np.hypot(*true.shape[1:])) ** 2
  thinned = {}
  best = 0.0
  for k in range(1, thresholds + 1):
    matched = predicted = 0
    for p, g in zip(prob, true):
      pred = p >= k / (thresholds + 1)
      if thin:
        pred = thinned.setdefault(pred.tobytes(), _slow_thin(pred))
      predicted += pred.sum()
      matched += _brute_matching(pred, g, squared_radius)
    precision = matched / predicted if predicted else 0.0
    recall = matched / true.sum() if true.sum() else 0.0
    if precision + recall:
      best = max(best, 2 * precision * recall / (precision + recall))
  return {"ods_f": best}


def _numpy_attributes(logits, labels, zero_division=0.0):
  out = {}
  for a in range(logits.shape[1]):
    pred, true = logits[:, a] > 0, labels[:, a] == 1
    tp, fp, fn = np.sum(pred & true), np.sum(pred & ~true), np.sum(~pred & true)
    out[f"accuracy/{a}"] = np.mean(pred == true)
    out[f"f1/{a}"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else zero_division
  for name in ("accuracy", "f1"):
    out[name] = np.mean([out[f"{name}/{a}"] for a in range(logits.shape[1])])
  return out


def _numpy_regression(pred, target):
  return {"mse": np.mean((pred.astype(np.float64) - target) ** 2)}


NUMPY = {"segmentation": functools.partial(_numpy_segmentation, num_classes=4), "depth": _numpy_depth,
         "normals": _numpy_normals, "edges": _numpy_edges_bsds, "attributes": _numpy_attributes,
         "regression": _numpy_regression}


def _metric(kind, **options):
  return build_task(kind, kind, **{**KINDS[kind], **options}).metric


# --- random data against numpy --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_matches_numpy_over_batches(kind):
  output, target = DATA[kind](np.random.default_rng(0), 6)
  metric = _metric(kind)
  got, want = metric.compute(_accumulate(metric, _split(output, target, 3))), NUMPY[kind](output, target)
  if kind == "normals":  # the streamed median is exact up to the histogram's bin width
    assert abs(got.pop("angle_median") - want.pop("angle_median")) <= metric.median_resolution
  _assert_close(got, want, atol=1e-4 if kind == "normals" else 1e-6)  # float32 angles are good to ~1e-5°


# 0.15 × the 10×12 diagonal ≈ 2.34 pixels: pairs up to (1, 2) apart match; 0.0075 ≈ 0.12: only the same pixel.
@pytest.mark.parametrize("max_dist", [0.0075, 0.15])
@pytest.mark.parametrize("thin", [True, False])
def test_edges_bsds_match_numpy(max_dist, thin):
  logits, edges = _edges_data(np.random.default_rng(1), 4)
  metric = _metric("edges", max_dist=max_dist, thin=thin, thresholds=19)
  got = metric.compute(_accumulate(metric, _split(logits, edges, 2)))
  _assert_close(got, _numpy_edges_bsds(logits, edges, thresholds=19, max_dist=max_dist, thin=thin))


@pytest.mark.parametrize("resolution", [0.01, 0.5])
@pytest.mark.parametrize("valid_count", [41, 42])  # odd: one middle angle; even: the mean of two
def test_normals_median_within_bin_width(resolution, valid_count):
  raw, normals = (x.reshape(1, 1, -1, 3) for x in _normals_data(np.random.default_rng(2), 3))
  end = np.searchsorted(np.cumsum(np.any(normals[0, 0] != 0, axis=-1)), valid_count) + 1
  raw, normals = raw[:, :, :end], normals[:, :, :end]
  metric = _metric("normals", median_resolution=resolution)
  got = metric.compute(_accumulate(metric, [(raw, normals)]))["angle_median"]
  assert _numpy_angles(raw, normals).size == valid_count
  assert abs(got - np.median(_numpy_angles(raw, normals))) <= resolution / 2 + 1e-4


# --- hand-worked cases ----------------------------------------------------------------------------------------------

def test_segmentation_2x2():
  """Labels [[0, 1], [1, void]], prediction [[0, 1], [0, 1]]: IoU 1/2 for classes 0 and 1; class 2 is absent.

  Void is the ignore label 255, or −2: outside [0, C), also excluded.
  """
  logits = np.eye(3, dtype=np.float32)[np.array([[[0, 1], [0, 1]]])]
  metric = _metric("segmentation", num_classes=3, ignore_index=255)
  for void in (255, -2):
    labels = np.array([[[0, 1], [1, void]]])
    _assert_close(metric.compute(_accumulate(metric, [(logits, labels)])), {"miou": 0.5, "pixel_acc": 2 / 3})


def test_depth_with_one_invalid_pixel():
  """Valid pairs (1, 2), (2, 2), (5, 4): errors 1, 0, 1; ratios 2, 1, 1.25 (not < 1.25)."""
  pred = np.array([1.0, 2.0, 3.0, 5.0], np.float32).reshape(1, 2, 2, 1)
  depth = np.array([2.0, 2.0, 0.0, 4.0], np.float32).reshape(1, 2, 2, 1)
  metric = _metric("depth")
  _assert_close(metric.compute(_accumulate(metric, [(pred, depth)])),
                {"abs_err": 2 / 3, "rel_err": (0.5 + 0.25) / 3, "rmse": np.sqrt(2 / 3), "delta1": 1 / 3})


def test_depth_nonpositive_prediction_fails_delta():
  pred = np.array([-1.0, 0.0, 1.1], np.float32).reshape(1, 1, 3, 1)
  depth = np.ones((1, 1, 3, 1), np.float32)
  metric = _metric("depth")
  assert metric.compute(_accumulate(metric, [(pred, depth)]))["delta1"] == pytest.approx(1 / 3)


def test_normals_known_angles():
  """Angles 0°, 45°, 90°, 180° to +z (raw, unnormalised predictions), a zero prediction (90°), an invalid pixel."""
  raw = np.array([[0, 0, 5], [1, 0, 1], [3, 0, 0], [0, 0, -2], [0, 0, 0], [1, 2, 3]], np.float32).reshape(1, 1, 6, 3)
  normals = np.array([[0, 0, 1]] * 5 + [[0, 0, 0]], np.float32).reshape(1, 1, 6, 3)
  metric = _metric("normals")
  got = metric.compute(_accumulate(metric, [(raw, normals)]))
  _assert_close(got, {"angle_mean": 81.0, "angle_median": 90.0, "within_11.25": 0.2, "within_22.5": 0.2,
                      "within_30": 0.2}, atol=metric.median_resolution)
  assert got["angle_mean"] == pytest.approx(81.0, abs=1e-4)
  # An even count (0°, 45°, 90°, 180°): the median is the mean of the two middle angles.
  got = metric.compute(_accumulate(metric, [(raw[:, :, :4], normals[:, :, :4])]))
  assert got["angle_median"] == pytest.approx(67.5, abs=metric.median_resolution)


def _edge_maps(true_pixels, pred_pixels, size=8):
  """(logits, edges), each (1, H, W, 1), size = H = W or (H, W): logit ±10 (predicted or not), edge 1 or 0."""
  shape = (1, *np.broadcast_to(size, 2), 1)
  edges, logits = np.zeros(shape, np.float32), np.full(shape, -10.0, np.float32)
  for r, c in true_pixels:
    edges[0, r, c] = 1.0
  for r, c in pred_pixels:
    logits[0, r, c] = 10.0
  return logits, edges


def _ods(pair, **options):
  metric = _metric("edges", **options)
  return metric.compute(_accumulate(metric, [pair]))["ods_f"]


def test_edges_shifted_by_one_pixel():
  """8×8 maps, diagonal 11.3 pixels: max_dist 0.15 is a radius of 1.70 pixels, 0.0075 one of 0.085."""
  column = [(r, 3) for r in range(8)]
  shifted = _edge_maps(column, [(r, 4) for r in range(8)])
  assert _ods(shifted, max_dist=0.15, thin=False) == pytest.approx(1.0)
  assert _ods(shifted, max_dist=0.0075, thin=False) == 0.0
  # Euclidean distance: a diagonal neighbour (√2 pixels away) matches within 1.70 pixels.
  assert _ods(_edge_maps([(2, 2)], [(3, 3)]), max_dist=0.15, thin=False) == pytest.approx(1.0)
  # Exact match plus a spurious column 3 pixels away: precision 1/2, recall 1 → F = 2/3.
  assert _ods(_edge_maps(column, column + [(r, 6) for r in range(8)]), max_dist=0.15,
              thin=False) == pytest.approx(2 / 3)


def test_edges_thick_band_along_a_line_by_hand():
  """A 3-pixel-thick predicted band (rows 6–8, columns 2–13) along a 1-pixel true line (row 7, columns 2–13), 16×16.

  Without thinning, one-to-one: only 12 of the 36 predicted pixels can be matched (P = 1/3, R = 1): F = 1/2.
  With thinning: worked through the conditions by hand, the first subiteration deletes the band's top row and
  right column (G3 holds where x1 = 0 or x2 = x3 = 0, x8 = 1), the second the bottom row and left column of what
  remains (G3' likewise), leaving row 7, columns 3–12; its two end pixels then fail G2 (min(n1, n2) = 1) and the
  inner ones G1 (X_H = 2). So 10 pixels, all on the line: P = 1, R = 10/12, F = 10/11, at any radius (one-to-one).
  A band one pixel longer at both ends (columns 1–14) thins to exactly the line: F = 1.
  """
  line = [(7, c) for c in range(2, 14)]
  band = [(r, c) for r in (6, 7, 8) for c in range(2, 14)]
  pair = _edge_maps(line, band, size=16)
  for max_dist in (0.0075, 0.1):  # radius 0.17 and 2.26 pixels
    assert _ods(pair, max_dist=max_dist, thin=False) == pytest.approx(0.5)
    assert _ods(pair, max_dist=max_dist) == pytest.approx(10 / 11)
  longer = _edge_maps(line, [(r, c) for r in (6, 7, 8) for c in range(1, 15)], size=16)
  assert _ods(longer) == pytest.approx(1.0)
  np.testing.assert_array_equal(boundaries.thin(longer[0][0, ..., 0] > 0), longer[1][0, ..., 0] > 0)


def test_edges_bsds_matching_is_one_to_one():
  """Two predicted pixels next to one true pixel: one pair (P = 1/2, R = 1, F = 2/3), not two."""
  pair = _edge_maps([(5, 5)], [(5, 5), (5, 6)], size=12)
  assert _ods(pair, max_dist=0.1, thin=False) == pytest.approx(2 / 3)  # radius 1.7 pixels
  # And the other way round: one predicted pixel between two true ones recalls one of them.
  assert _ods(_edge_maps([(5, 4), (5, 6)], [(5, 5)], size=12), max_dist=0.1) == pytest.approx(2 / 3)


@pytest.mark.parametrize("squared_radius", [0, 1, 2, 4, 5, 8, 9])
def test_match_count_equals_brute_force_maximum_matching(squared_radius):
  """Random 7×8 maps against an assignment solver; integer squared radii put many pairs exactly on the radius."""
  rng = np.random.default_rng(squared_radius)
  for _ in range(20):
    pred, true = rng.random((7, 8)) < rng.uniform(0.1, 0.6), rng.random((7, 8)) < rng.uniform(0.1, 0.6)
    assert (boundaries.match_count(pred, true, np.sqrt(squared_radius))
            == _brute_matching(pred, true, squared_radius))


@pytest.mark.parametrize("size", [(30, 40), (60, 80)])  # diagonals 50 and 100 pixels
def test_edges_bsds_radius_scales_with_the_diagonal(size):
  """One true pixel and one prediction d pixels away match iff d ≤ max_dist · diagonal (here 0.04 · diagonal)."""
  diagonal = np.hypot(*size)
  for offset in [(0, d) for d in range(7)] + [(3, 4), (4, 3)]:  # (3, 4): distance exactly 5
    distance = np.hypot(*offset)
    pair = _edge_maps([(10, 10)], [(10 + offset[0], 10 + offset[1])], size=size)
    want = 1.0 if distance <= 0.04 * diagonal else 0.0
    assert _ods(pair, max_dist=0.04) == want, (size, offset)
  # Exactly on the radius counts as within it: distance 5 = 0.1 · 50 on the smaller image.
  if size == (30, 40):
    assert _ods(_edge_maps([(10, 10)], [(13, 14)], size=size), max_dist=0.1) == 1.0
    assert _ods(_edge_maps([(10, 10)], [(13, 14)], size=size), max_dist=0.0999) == 0.0


def test_edges_jitted_update_equals_eager():
  logits, edges = _edges_data(np.random.default_rng(8), 3)
  for options in ({}, {"max_dist": 0.15}, {"thin": False}):
    metric = _metric("edges", thresholds=9, **options)
    eager = metric.update(metric.init(), logits, edges)
    jitted = jax.jit(metric.update)(metric.init(), logits, edges)
    assert set(eager) == set(jitted) == set(metric.init())
    for key in eager:
      assert jitted[key].dtype == eager[key].dtype == np.int32
      np.testing.assert_array_equal(jitted[key], eager[key], err_msg=f"{options} {key}")


def test_edges_bsds_update_in_pieces_equals_whole():
  """The bsds update hands its data to the host callback in pieces (see `EdgeMetric.CALLBACK_PIECE_BYTES`); cutting
  them into many uneven ones changes nothing."""

  @dataclasses.dataclass(frozen=True)
  class SmallPieces(metrics.EdgeMetric):
    CALLBACK_PIECE_BYTES = 37

  logits, edges = _edges_data(np.random.default_rng(9), 3)
  whole, pieces = metrics.EdgeMetric(max_dist=0.15), SmallPieces(max_dist=0.15)
  got = jax.jit(pieces.update)(pieces.init(), logits, edges)
  want = jax.jit(whole.update)(whole.init(), logits, edges)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_edges_bsds_update_finishes_on_one_core():
  """On one usable core XLA's CPU thread pool has one thread, the one running the host callback; an operand of
  100 KiB or more is copied on that pool, so passed whole it may never arrive: the update hung, in most updates of
  batches of 40 images of 64×64 (160 KiB of codes). Ten such updates must finish."""
  script = textwrap.dedent("""
      import os
      os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
      import jax
      import numpy as np
      from msp.tasks import metrics
      rng = np.random.default_rng(0)
      metric = metrics.EdgeMetric(thresholds=3)
      update = jax.jit(metric.update)
      state = metric.init()
      for _ in range(10):
        logits = rng.normal(size=(40, 64, 64, 1)).astype(np.float32)
        edges = (rng.random((40, 64, 64, 1)) < 0.1).astype(np.float32)
        state = update(state, logits, edges)
      print("predicted", np.asarray(state["predicted"]).tolist())
      """)
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("predicted [")


@pytest.mark.parametrize("options", [{"max_dist": 0}, {"max_dist": -0.01}, {"max_dist": float("inf")},
                                     {"max_dist": float("nan")}, {"max_dist": "0.01"}, {"thresholds": 0},
                                     {"thresholds": 9.0}, {"thin": "yes"}, {"thin": None}, {"matching": "dilation"}])
def test_edges_bad_options(options):
  with pytest.raises((ValueError, TypeError), match=next(iter(options))):
    metrics.EdgeMetric(**options)
  with pytest.raises(ValueError, match="bad options"):
    build_task("e", "edges", **options)


def test_edges_convention():
  assert metrics.EdgeMetric().convention == (
      "ods_f: predictions thinned, one-to-one matching within 0.0075 × image diagonal, 99 thresholds (BSDS)")
  assert "not thinned" in metrics.EdgeMetric(thin=False, max_dist=0.011).convention
  assert "0.011 × image diagonal" in metrics.EdgeMetric(max_dist=0.011).convention
  assert "19 thresholds" in metrics.EdgeMetric(thresholds=19).convention


# --- thinning (msp.tasks.boundaries.thin) ----------------------------------------------------------------------------

def test_thin_published_example():
  """The example in scikit-image's `thin` documentation (the same algorithm): a 5×3 block with a pixel off its
  top-left corner becomes that pixel, a diagonal step and a vertical stroke."""
  square = np.zeros((7, 7), bool)
  square[1:-1, 2:-2] = True
  square[0, 1] = True
  want = np.zeros((7, 7), bool)
  want[0, 1] = want[1, 2] = want[2, 3] = want[3, 3] = want[4, 3] = True
  np.testing.assert_array_equal(boundaries.thin(square), want)


@pytest.mark.parametrize("thickness", [2, 3, 4, 5, 6])
def test_thin_bar_becomes_a_one_pixel_line(thickness):
  bar = np.zeros((12, 24), bool)
  bar[3:3 + thickness, 2:22] = True
  out = boundaries.thin(bar)
  assert not np.any(out & ~bar)
  rows = np.flatnonzero(out.any(axis=1))
  assert rows.size == 1 and 3 <= rows[0] < 3 + thickness  # one row inside the bar …
  assert np.all(np.diff(np.flatnonzero(out[rows[0]])) == 1) and out.sum() >= 20 - thickness  # … one unbroken run


def test_thin_keeps_one_pixel_lines():
  for line in (np.eye(9, dtype=bool), np.eye(9, dtype=bool)[::-1], np.zeros((9, 9), bool)):
    np.testing.assert_array_equal(boundaries.thin(line), line)
  straight = np.zeros((9, 11), bool)
  straight[4, 1:10] = True
  for image in (straight, straight.T, np.pad(straight[4:5, 1:10], 0)):  # the last one touches the border
    np.testing.assert_array_equal(boundaries.thin(image), image)


def _blobs(rng, n, shape=(20, 24)):
  """n random binary maps with thick blobs, lines, holes and isolated pixels."""
  smooth = ndimage.gaussian_filter(rng.normal(size=(n, *shape)), sigma=(0, 1.5, 1.5))
  return (smooth > 0.05) | (rng.random((n, *shape)) < 0.03)


def test_thin_matches_slow_reference_and_keeps_components():
  masks = _blobs(np.random.default_rng(3), 6)
  out = boundaries.thin(masks)  # a batch: thinned together, each independently
  eight = np.ones((3, 3), bool)
  for mask, thinned in zip(masks, out):
    np.testing.assert_array_equal(thinned, _slow_thin(mask))
    np.testing.assert_array_equal(thinned, boundaries.thin(mask))
    assert not np.any(thinned & ~mask)
    assert ndimage.label(thinned, eight)[1] == ndimage.label(mask, eight)[1]
    assert thinned.sum() < mask.sum()
    np.testing.assert_array_equal(boundaries.thin(thinned), thinned)  # thinning is idempotent


def test_attributes_hand_computed():
  """Attribute 0: tp, fn, fp, tn 1 each → acc 1/2, F1 1/2. Attribute 1: perfect. Attribute 2: no positive predicted
  nor present → F1 = zero_division (0 by default, as scikit-learn's f1_score; 1 or NaN on request)."""
  labels = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]], np.float32)
  logits = np.array([[2, 1, -1], [-1, -1, -2], [3, 0, -1], [-2, -1, 0]], np.float32)  # logit 0 is negative
  expected = {"accuracy": (0.5 + 1 + 1) / 3, "accuracy/0": 0.5, "accuracy/1": 1.0, "accuracy/2": 1.0, "f1/0": 0.5,
              "f1/1": 1.0}
  for zero_division, f1_2, f1 in ((0.0, 0.0, 1.5 / 3), (1.0, 1.0, 2.5 / 3), (np.nan, np.nan, 1.5 / 2)):
    metric = _metric("attributes", num_attributes=3, zero_division=zero_division)
    got = metric.compute(_accumulate(metric, [(logits, labels)]))
    _assert_close({k: v for k, v in got.items() if k != "f1/2"}, {**expected, "f1": f1})
    assert got["f1/2"] == f1_2 or (np.isnan(f1_2) and np.isnan(got["f1/2"]))
  with pytest.raises(ValueError, match="zero_division"):
    _metric("attributes", num_attributes=3, zero_division=0.5)


# --- streaming: batching, merge --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_batches_equal_one_pass(kind):
  output, target = DATA[kind](np.random.default_rng(4), 6)
  metric = _metric(kind)
  _assert_close(metric.compute(_accumulate(metric, _split(output, target, 3))),
                metric.compute(_accumulate(metric, [(output, target)])))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_merge_equals_updating_with_both(kind):
  (first, second) = _split(*DATA[kind](np.random.default_rng(5), 4), 2)
  metric = _metric(kind)
  both = _accumulate(metric, [first, second])
  merged = metric.merge(_accumulate(metric, [first]), _accumulate(metric, [second]))
  assert set(merged) == set(both)
  for key in both:
    np.testing.assert_allclose(merged[key], both[key], rtol=1e-6, err_msg=key)
  # States pulled to the host (e.g. as int64 against int32 overflow) merge with the same result.
  host = [{k: np.asarray(v, np.int64 if v.dtype.kind == "i" else np.float64) for k, v in state.items()}
          for state in (_accumulate(metric, [first]), _accumulate(metric, [second]))]
  _assert_close(metric.compute(metric.merge(*host)), metric.compute(both))


# --- registry -------------------------------------------------------------------------------------------------------

EXPECTED = {
    "segmentation": (metrics.SegmentationMetric, "miou", {"miou": True, "pixel_acc": True}),
    "depth": (metrics.DepthMetric, "abs_err", {"abs_err": False, "rel_err": False, "rmse": False, "delta1": True}),
    "normals": (metrics.NormalsMetric, "angle_mean", {"angle_mean": False, "angle_median": False,
                                                      "within_11.25": True, "within_22.5": True, "within_30": True}),
    "edges": (metrics.EdgeMetric, "ods_f", {"ods_f": True}),
    "attributes": (metrics.AttributeMetric, "f1", {f"{m}{s}": True for m in ("accuracy", "f1")
                                                   for s in ("", "/0", "/1", "/2", "/3")}),
    "regression": (metrics.RegressionMetric, "mse", {"mse": False}),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_registry_metric_names_and_directions(kind):
  cls, headline, directions = EXPECTED[kind]
  metric = _metric(kind)
  assert isinstance(metric, cls) and metric.headline == headline
  assert dict(metric.higher_is_better) == directions
  output, target = DATA[kind](np.random.default_rng(7), 2)
  assert set(metric.compute(_accumulate(metric, [(output, target)]))) == set(directions)
  assert set(metric.compute(metric.init())) == set(directions)  # an empty state computes too (NaN where undefined)


def test_registry_options():
  seg = build_task("seg", "segmentation", num_classes=13, ignore_index=255)
  assert (seg.head, seg.channels, seg.metric) == ("dense", 13, metrics.SegmentationMetric(13, 255))
  assert build_task("e", "edges", thresholds=9).metric == metrics.EdgeMetric(thresholds=9)
  assert (build_task("e", "edges", max_dist=0.011, thin=False).metric
          == metrics.EdgeMetric(max_dist=0.011, thin=False))
  assert build_task("e", "edges").metric == metrics.EdgeMetric(max_dist=0.0075, thin=True, thresholds=99)
  assert build_task("attr", "attributes", num_attributes=2).metric == metrics.AttributeMetric(2)
  for kind, options in (("segmentation", {}), ("edges", {"thresholds": -1}), ("edges", {"matching": "dilation"}),
                        ("normals", {"median_resolution": 0})):
    with pytest.raises(ValueError, match="bad options"):
      build_task("t", kind, **options)
