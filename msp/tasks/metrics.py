"""Streaming, mergeable evaluation metrics per task kind (docs/method.md §15.1).

Each metric is a frozen dataclass with pure methods:
  `init() -> state`                       a dict of jnp arrays (counts, sums, histograms), all zeros;
  `update(state, output, target) -> state` jittable; `output` is the task's raw head output, `target` as the losses
                                           take it (see `msp.tasks.losses` for the conventions);
  `merge(a, b) -> state`                  element-wise sum, so states combine across batches, devices and hosts;
  `compute(state) -> {name: float}`       on the host, in float64.
`higher_is_better` maps every name `compute` returns to its direction; `headline` names the one for summary tables;
`convention` is one line of text naming the metric's conventions (units, pooling, edge cases), printed with results;
`delta_m_metrics` are the ones Δm compares by default (LibMTL's per-task sets: `msp.tasks.delta_m`); `fractions` the
ones bounded to [0, 1]. Every fraction is a fraction in [0, 1], never a percentage.

Everything is pooled over the dataset (never an average of per-batch values), so accumulating batch by batch or
merging partial states gives exactly the one-pass result up to float32 summation order. Counts are int32: exact up
to 2^31 − 1 per entry (e.g. about 7,000 images of 480×640 in one confusion-matrix cell). For larger evaluations pull
partial states to the host as int64 numpy arrays and merge them there: `merge` only uses `+`, so it works on numpy
states too.
"""
import abc
import dataclasses
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from msp.tasks import boundaries, losses

State = dict[str, jax.Array]


def _count(mask: jax.Array, axis: int | None = None) -> jax.Array:
  """Number of True entries of `mask` (over `axis`, default all), int32."""
  return jnp.sum(mask, axis=axis, dtype=jnp.int32)


def _histogram(indices: jax.Array, weights: jax.Array, length: int) -> jax.Array:
  """(length,) int32: Σ weights per index; indices int in [0, length), weights bool or int, both of any equal shape."""
  return jnp.zeros(length, jnp.int32).at[indices.ravel()].add(weights.ravel().astype(jnp.int32))


def _ratio(numerator, denominator) -> np.ndarray:
  """numerator / denominator element-wise in float64, NaN where the denominator is 0 (nothing was counted)."""
  numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
  return np.divide(numerator, denominator, out=np.full(np.broadcast(numerator, denominator).shape, np.nan),
                   where=denominator != 0)


def _host(state: State) -> dict[str, np.ndarray]:
  """The state as float64 numpy arrays."""
  return {key: np.asarray(value, np.float64) for key, value in jax.device_get(state).items()}


class Metric(abc.ABC):
  """Interface of a streaming metric; see the module docstring."""
  higher_is_better: ClassVar[Mapping[str, bool]]
  headline: ClassVar[str]
  convention: ClassVar[str]
  delta_m_metrics: ClassVar[tuple[str, ...]]
  fractions: ClassVar[tuple[str, ...]] = ()

  @abc.abstractmethod
  def init(self) -> State:
    """The empty state: a dict of zero jnp arrays whose shapes depend only on the metric's options."""

  @abc.abstractmethod
  def update(self, state: State, output: jax.Array, target: jax.Array) -> State:
    """`state` plus the statistics of one batch (raw head `output`, `target`); jittable."""

  @abc.abstractmethod
  def compute(self, state: State) -> dict[str, float]:
    """Host side: metric name → value, from a state accumulated over the dataset."""

  def merge(self, a: State, b: State) -> State:
    """Element-wise sum of two states (jnp or numpy): the state of both their data."""
    return {key: a[key] + b[key] for key in a}


@dataclasses.dataclass(frozen=True)
class SegmentationMetric(Metric):
  """Dataset-level confusion matrix → `miou` and `pixel_acc` (fractions in [0, 1]).

  output: logits (B, H, W, C); target: labels (B, H, W) int in [0, C) or `ignore_index`. Pixels labelled
  `ignore_index` or outside [0, C) are excluded. `miou` averages IoU_c = |pred=c ∧ gt=c| / |pred=c ∨ gt=c| over the
  classes present in the ground truth or the prediction of the whole dataset (absent classes have no IoU).
  """
  num_classes: int
  ignore_index: int = -1
  higher_is_better: ClassVar[Mapping[str, bool]] = {"miou": True, "pixel_acc": True}
  headline: ClassVar[str] = "miou"
  delta_m_metrics: ClassVar[tuple[str, ...]] = ("miou", "pixel_acc")
  fractions: ClassVar[tuple[str, ...]] = ("miou", "pixel_acc")
  convention: ClassVar[str] = ("segmentation: one confusion matrix over the dataset; miou over the classes present in "
                               "ground truth or prediction; miou, pixel_acc fractions")

  def __post_init__(self):
    if self.num_classes < 1:
      raise ValueError(f"num_classes must be ≥ 1, got {self.num_classes}")

  def init(self) -> State:
    """confusion (C, C) int32, rows = ground truth, columns = prediction."""
    return {"confusion": jnp.zeros((self.num_classes, self.num_classes), jnp.int32)}

  def update(self, state: State, logits: jax.Array, labels: jax.Array) -> State:
    """logits (B, H, W, C); labels (B, H, W)."""
    c = self.num_classes
    labels = labels.astype(jnp.int32)
    valid = (labels != self.ignore_index) & (labels >= 0) & (labels < c)
    cells = jnp.where(valid, labels * c + jnp.argmax(logits, axis=-1), 0)
    return self.merge(state, {"confusion": _histogram(cells, valid, c * c).reshape(c, c)})

  def compute(self, state: State) -> dict[str, float]:
    """miou, pixel_acc; NaN when no valid pixel was seen."""
    confusion = _host(state)["confusion"]
    hits = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = union > 0
    miou = float(np.mean(hits[present] / union[present])) if present.any() else float("nan")
    return {"miou": miou, "pixel_acc": float(_ratio(hits.sum(), confusion.sum()))}


@dataclasses.dataclass(frozen=True)
class DepthMetric(Metric):
  """Errors over valid pixels pooled across the dataset: `abs_err` (m), `rel_err`, `rmse` (m), `delta1` (fraction).

  output: prediction (B, H, W, 1) in metres; target: depth (B, H, W, 1) in metres, 0 = invalid. abs_err = mean |p−g|,
  rel_err = mean |p−g|/g, rmse = √(pooled mean (p−g)²), delta1 = fraction with max(p/g, g/p) < 1.25 where a
  prediction p ≤ 0 always fails. With `normalization` "per_image_max" the target is first normalised as the depth
  loss does (`losses.normalize_depth`) and the prediction is in those units: abs_err and rmse are then fractions of
  each image's maximum depth, not metres.
  """
  normalization: str = "none"
  higher_is_better: ClassVar[Mapping[str, bool]] = {
      "abs_err": False, "rel_err": False, "rmse": False, "delta1": True}
  headline: ClassVar[str] = "abs_err"
  delta_m_metrics: ClassVar[tuple[str, ...]] = ("abs_err", "rel_err")
  fractions: ClassVar[tuple[str, ...]] = ("delta1",)  # abs_err, rmse as fractions of a maximum may still exceed 1

  @property
  def convention(self) -> str:
    units = "metres" if self.normalization == "none" else "fractions of each image's maximum depth"
    return (f"depth: pooled over the valid pixels of the dataset; abs_err, rmse in {units}; rel_err, delta1 "
            f"fractions")

  def init(self) -> State:
    """count, delta1 (int32 scalars: valid pixels, pixels within δ < 1.25); abs, rel, squared (float32 error sums)."""
    return {"count": jnp.zeros((), jnp.int32), "delta1": jnp.zeros((), jnp.int32),
            "abs": jnp.zeros((), jnp.float32), "rel": jnp.zeros((), jnp.float32),
            "squared": jnp.zeros((), jnp.float32)}

  def update(self, state: State, pred: jax.Array, depth: jax.Array) -> State:
    """pred, depth (B, H, W, 1) metres."""
    pred, depth = pred.astype(jnp.float32), losses.normalize_depth(depth.astype(jnp.float32), self.normalization)
    valid = depth > 0
    positive = pred > 0
    # Substitute 1 where a ratio is undefined so no inf/NaN is formed; those pixels are masked out anyway.
    safe_depth = jnp.where(valid, depth, 1.0)
    safe_pred = jnp.where(positive, pred, 1.0)
    error = jnp.where(valid, jnp.abs(pred - depth), 0.0)
    ratio = jnp.maximum(safe_pred / safe_depth, safe_depth / safe_pred)
    return self.merge(state, {
        "count": _count(valid), "delta1": _count(valid & positive & (ratio < 1.25)),
        "abs": jnp.sum(error), "rel": jnp.sum(error / safe_depth), "squared": jnp.sum(error * error)})

  def compute(self, state: State) -> dict[str, float]:
    """abs_err, rel_err, rmse, delta1; NaN when no valid pixel was seen."""
    s = _host(state)
    return {"abs_err": float(_ratio(s["abs"], s["count"])), "rel_err": float(_ratio(s["rel"], s["count"])),
            "rmse": float(np.sqrt(_ratio(s["squared"], s["count"]))),
            "delta1": float(_ratio(s["delta1"], s["count"]))}


@dataclasses.dataclass(frozen=True)
class NormalsMetric(Metric):
  """Angle (degrees) between predicted and true normals over valid pixels, pooled across the dataset.

  output: raw (B, H, W, 3), unnormalised; target: normals (B, H, W, 3), unit, zero vector = invalid. Returns
  `angle_mean`, `angle_median` (degrees) and `within_11.25`, `within_22.5`, `within_30` (fractions in [0, 1] of the
  valid pixels with angle < threshold, like every other fraction msp reports; published tables print them ×100). The prediction is normalised (`losses.unit_normals`) and the angle taken as
  atan2(|p×g|, p·g), which stays accurate near 0° and 180° where arccos(p·g) loses ~0.02° in float32. A zero
  prediction has no direction and counts as 90° (cos = 0, as in the loss). The median is streamed through a
  histogram of `median_resolution`-degree bins over [0°, 180°]: it is the centre of the bin holding the middle angle
  (the mean of two such centres for an even count), so it is within `median_resolution` / 2 of the exact median.
  """
  median_resolution: float = 0.01
  within_degrees: ClassVar[tuple[float, ...]] = (11.25, 22.5, 30.0)
  higher_is_better: ClassVar[Mapping[str, bool]] = {
      "angle_mean": False, "angle_median": False, **{f"within_{t:g}": True for t in within_degrees}}
  headline: ClassVar[str] = "angle_mean"
  delta_m_metrics: ClassVar[tuple[str, ...]] = ("angle_mean", "angle_median", "within_11.25", "within_22.5",
                                                "within_30")
  fractions: ClassVar[tuple[str, ...]] = ("within_11.25", "within_22.5", "within_30")
  convention: ClassVar[str] = ("normals: angles in degrees pooled over the valid pixels of the dataset; within_* "
                               "fractions of those pixels (not percent)")

  def __post_init__(self):
    if not 0 < self.median_resolution <= 180:
      raise ValueError(f"median_resolution must be in (0, 180] degrees, got {self.median_resolution}")

  @property
  def num_bins(self) -> int:
    """Histogram bins covering [0°, 180°]."""
    return int(np.ceil(180.0 / self.median_resolution))

  def init(self) -> State:
    """count (int32), angle_sum (float32 degrees), within (3,) int32 per threshold, histogram (num_bins,) int32."""
    return {"count": jnp.zeros((), jnp.int32), "angle_sum": jnp.zeros((), jnp.float32),
            "within": jnp.zeros(len(self.within_degrees), jnp.int32), "histogram": jnp.zeros(self.num_bins, jnp.int32)}

  def update(self, state: State, raw: jax.Array, normals: jax.Array) -> State:
    """raw, normals (B, H, W, 3)."""
    pred, normals = losses.unit_normals(raw.astype(jnp.float32)), normals.astype(jnp.float32)
    valid = jnp.any(normals != 0, axis=-1)
    angle = jnp.degrees(jnp.arctan2(jnp.linalg.norm(jnp.cross(pred, normals), axis=-1),
                                    jnp.sum(pred * normals, axis=-1)))
    angle = jnp.where(jnp.any(pred != 0, axis=-1), angle, 90.0)
    bins = jnp.clip(jnp.floor(angle / self.median_resolution).astype(jnp.int32), 0, self.num_bins - 1)
    return self.merge(state, {
        "count": _count(valid), "angle_sum": jnp.sum(jnp.where(valid, angle, 0.0)),
        "within": jnp.stack([_count(valid & (angle < t)) for t in self.within_degrees]),
        "histogram": _histogram(bins, valid, self.num_bins)})

  def compute(self, state: State) -> dict[str, float]:
    """angle_mean, angle_median (degrees), within_* (fractions); NaN when no valid pixel was seen."""
    s = _host(state)
    n = int(s["count"])
    if n:
      # The middle order statistics (0-based) n//2 and (n−1)//2, each located by the cumulative histogram.
      cumulative = np.cumsum(s["histogram"])
      middle = np.searchsorted(cumulative, [(n - 1) // 2, n // 2], side="right")
      median = float(np.mean(middle + 0.5) * self.median_resolution)
    else:
      median = float("nan")
    within = _ratio(s["within"], n)
    return {"angle_mean": float(_ratio(s["angle_sum"], n)), "angle_median": median,
            **{f"within_{t:g}": float(w) for t, w in zip(self.within_degrees, within)}}


@dataclasses.dataclass(frozen=True)
class EdgeMetric(Metric):
  """`ods_f`: F-measure at the optimal dataset-wide threshold (ODS) of sigmoid(logit), in [0, 1].

  output: logits (B, H, W, 1); target: edges (B, H, W, 1), > 0 = true edge. A pixel is a predicted edge at threshold
  t if sigmoid(logit) ≥ t, for t = k / (thresholds + 1), k = 1 … thresholds. Per threshold, precision and recall are
  counted over the whole dataset; F = 2PR / (P + R); P, R or F with a zero denominator is 0 (as in the BSDS code).
  ods_f = max over thresholds of F. `convention` says in one line how it was computed.

  The matching is the standard boundary evaluation (BSDS benchmark `correspondPixels`, SEISM, as used for
  published NYUD / PASCAL-Context multi-task numbers): each thresholded prediction is thinned to one-pixel-wide
  curves (MATLAB's bwmorph 'thin', `boundaries.thin`; `thin=False` skips this), then predicted and true edge pixels
  (the ground truth is not thinned) are matched one-to-one, a pair allowed at Euclidean distance ≤ `max_dist` ×
  the image diagonal √(H² + W²). precision = matched / predicted pixels, recall = matched / true pixels. max_dist
  0.0075 is the BSDS / PASCAL-Context value; NYUD-v2 is evaluated with 0.011 (Gupta et al.'s NYUD contour
  benchmark; ATRC and InvPT state they follow it, as ASTMT did). On small images the radius can be under a pixel
  (0.0075 × the 90.5-pixel diagonal of 64×64 is 0.68): only a prediction on the true pixel itself then counts.
  Ground-truth edges several pixels thick, as label boundaries can be, cannot all be recalled by a thinned
  prediction. SEISM thresholds 8-bit PNGs with `>`; here the float32 probability with ≥. The matching runs on the
  host (`jax.pure_callback` inside the jittable update, `boundaries.boundary_counts`); its cost grows with the
  number of predicted pixels.

  Fields: max_dist (fraction of the image diagonal, > 0); thresholds (int ≥ 1); thin (bool).
  """
  thresholds: int = 99
  max_dist: float = 0.0075
  thin: bool = True
  higher_is_better: ClassVar[Mapping[str, bool]] = {"ods_f": True}
  headline: ClassVar[str] = "ods_f"
  delta_m_metrics: ClassVar[tuple[str, ...]] = ("ods_f",)
  fractions: ClassVar[tuple[str, ...]] = ("ods_f",)

  def __post_init__(self):
    if isinstance(self.thresholds, bool) or not isinstance(self.thresholds, (int, np.integer)) or self.thresholds < 1:
      raise ValueError(f"thresholds must be an int ≥ 1, got {self.thresholds!r}")
    if (isinstance(self.max_dist, bool) or not isinstance(self.max_dist, (int, float, np.integer, np.floating))
        or not 0 < self.max_dist < np.inf):
      raise ValueError(f"max_dist must be a finite number > 0 (a fraction of the image diagonal), got "
                       f"{self.max_dist!r}")
    if not isinstance(self.thin, (bool, np.bool_)):
      raise ValueError(f"thin must be a bool, got {self.thin!r}")

  @property
  def convention(self) -> str:
    """One line naming how ods_f was computed, for printing next to it."""
    return (f"ods_f: predictions {'thinned' if self.thin else 'not thinned'}, one-to-one matching within "
            f"{self.max_dist:g} × image diagonal, {self.thresholds} thresholds (BSDS)")

  def threshold_values(self) -> np.ndarray:
    """(thresholds,) float32 probabilities k / (thresholds + 1), increasing."""
    return (np.arange(1, self.thresholds + 1) / (self.thresholds + 1)).astype(np.float32)

  def init(self) -> State:
    """Per threshold (thresholds,) int32 matched (pairs) and predicted (pixels, after thinning); true (int32
    scalar), the true edge pixels."""
    zeros = jnp.zeros(self.thresholds, jnp.int32)
    return {"predicted": zeros, "matched": zeros, "true": jnp.zeros((), jnp.int32)}

  # XLA's CPU client copies a callback operand of 100 KiB or more on its thread pool, the pool the running callback
  # occupies: with a one-thread pool (one usable core) the copy would never run and the callback would wait forever.
  # The update therefore hands its data to the host in pieces of this many bytes.
  CALLBACK_PIECE_BYTES: ClassVar[int] = 64 * 1024

  def _host_counts(self, shape: tuple[int, ...], *pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pure_callback body: pieces of the flat (B, H, W) codes 2·level + true → (matched, predicted), (thresholds,)
    int32 each."""
    code = np.concatenate([np.asarray(piece) for piece in pieces]).reshape(shape)
    matched, predicted = boundaries.boundary_counts(code >> 1, (code & 1).astype(bool), self.thresholds,
                                                    self.max_dist, self.thin)
    return matched.astype(np.int32), predicted.astype(np.int32)

  def update(self, state: State, logits: jax.Array, edges: jax.Array) -> State:
    """logits, edges (B, H, W, 1)."""
    prob = jax.nn.sigmoid(logits[..., 0].astype(jnp.float32))
    true = edges[..., 0] > 0
    # Per pixel, level = number of thresholds ≤ its probability (predicted at threshold k, 0-based, iff level > k)
    # and whether it is a true edge, in one small integer.
    levels = jnp.searchsorted(jnp.asarray(self.threshold_values()), prob, side="right")
    code = (2 * levels + true).astype(np.min_scalar_type(2 * self.thresholds + 1)).reshape(-1)
    if not code.size:
      return state
    step = self.CALLBACK_PIECE_BYTES // code.dtype.itemsize
    counts = jax.ShapeDtypeStruct((self.thresholds,), jnp.int32)
    matched, predicted = jax.pure_callback(lambda *pieces: self._host_counts(prob.shape, *pieces), (counts, counts),
                                           *(code[i:i + step] for i in range(0, code.size, step)))
    return self.merge(state, {"predicted": predicted, "matched": matched, "true": _count(true)})

  def compute(self, state: State) -> dict[str, float]:
    """ods_f."""
    s = _host(state)
    precision = np.nan_to_num(_ratio(s["matched"], s["predicted"]))
    recall = np.nan_to_num(_ratio(s["matched"], s["true"]))
    f = np.nan_to_num(_ratio(2 * precision * recall, precision + recall))
    return {"ods_f": float(f.max())}


@dataclasses.dataclass(frozen=True)
class AttributeMetric(Metric):
  """Per-attribute accuracy and F1 (fractions in [0, 1]) and their macro averages `accuracy`, `f1`.

  output: logits (B, A); target: labels (B, A) in {0, 1}. An attribute is predicted present iff its logit > 0.
  F1 = 2TP / (2TP + FP + FN); with no positive predicted nor present (denominator 0) F1 is `zero_division`: 0 by
  default, as scikit-learn's `f1_score` (1.0 or NaN on request; NaN drops the attribute from the macro average).
  Per-attribute values are named `accuracy/<i>` and `f1/<i>`, i = 0 … A−1.
  """
  num_attributes: int
  zero_division: float = 0.0
  headline: ClassVar[str] = "f1"
  delta_m_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "f1")
  fractions: ClassVar[tuple[str, ...]] = ("accuracy", "f1")

  def __post_init__(self):
    if self.num_attributes < 1:
      raise ValueError(f"num_attributes must be ≥ 1, got {self.num_attributes}")
    if not (self.zero_division in (0.0, 1.0) or np.isnan(self.zero_division)):
      raise ValueError(f"zero_division must be 0, 1 or nan (as scikit-learn's), got {self.zero_division}")

  @property
  def convention(self) -> str:
    return (f"attributes: present iff logit > 0; accuracy and f1 macro-averaged over attributes; f1 with no positive "
            f"predicted nor present = {self.zero_division:g} (scikit-learn's zero_division)")

  @property
  def higher_is_better(self) -> Mapping[str, bool]:
    """Every name `compute` returns (per-attribute names depend on `num_attributes`) → True."""
    return {name: True for metric in ("accuracy", "f1")
            for name in (metric, *(f"{metric}/{i}" for i in range(self.num_attributes)))}

  def init(self) -> State:
    """tp, fp, fn, tn: (A,) int32 confusion counts per attribute."""
    zeros = jnp.zeros(self.num_attributes, jnp.int32)
    return {"tp": zeros, "fp": zeros, "fn": zeros, "tn": zeros}

  def update(self, state: State, logits: jax.Array, labels: jax.Array) -> State:
    """logits, labels (B, A)."""
    pred, true = logits > 0, labels > 0
    return self.merge(state, {"tp": _count(pred & true, 0), "fp": _count(pred & ~true, 0),
                              "fn": _count(~pred & true, 0), "tn": _count(~pred & ~true, 0)})

  def compute(self, state: State) -> dict[str, float]:
    """accuracy, f1 (macro averages) and accuracy/<i>, f1/<i>; accuracy NaN when no example was seen."""
    s = _host(state)
    accuracy = _ratio(s["tp"] + s["tn"], s["tp"] + s["fp"] + s["fn"] + s["tn"])
    f1 = _ratio(2 * s["tp"], 2 * s["tp"] + s["fp"] + s["fn"])
    f1 = np.where(np.isnan(f1), self.zero_division, f1)
    out = {"accuracy": float(np.mean(accuracy)), "f1": float(np.nanmean(f1)) if np.any(~np.isnan(f1)) else np.nan}
    for name, values in (("accuracy", accuracy), ("f1", f1)):
      out.update({f"{name}/{i}": float(v) for i, v in enumerate(values)})
    return out


@dataclasses.dataclass(frozen=True)
class RegressionMetric(Metric):
  """`mse`: mean squared error over all entries, pooled across the dataset. output, target of equal shape."""
  higher_is_better: ClassVar[Mapping[str, bool]] = {"mse": False}
  headline: ClassVar[str] = "mse"
  delta_m_metrics: ClassVar[tuple[str, ...]] = ("mse",)
  convention: ClassVar[str] = "regression: mse over all entries of the dataset"

  def init(self) -> State:
    """count (int32 entries), squared (float32 sum of squared errors)."""
    return {"count": jnp.zeros((), jnp.int32), "squared": jnp.zeros((), jnp.float32)}

  def update(self, state: State, pred: jax.Array, target: jax.Array) -> State:
    """pred, target of equal shape."""
    error = pred.astype(jnp.float32) - target.astype(jnp.float32)
    return self.merge(state, {"count": jnp.asarray(error.size, jnp.int32), "squared": jnp.sum(error * error)})

  def compute(self, state: State) -> dict[str, float]:
    """mse; NaN when nothing was seen."""
    s = _host(state)
    return {"mse": float(_ratio(s["squared"], s["count"]))}
