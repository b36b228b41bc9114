r"""Multi-task performance Δm of a run's results relative to a baseline's (Maninis et al. 2019; docs/method.md §15.2).

  Δm = 100 · (1/T) Σ_t (1/M_t) Σ_{m of t} (−1)^{l_m} (M_m − M_b,m) / M_b,m,   l_m = 1 when lower is better,

in percent; positive means better than the baseline (usually the single-task dense networks). Conventions:
  task_mean    (default, LibMTL) average the relative changes within each task first, then over the T tasks;
  metric_mean  a flat average over all compared metrics (tasks with more metrics weigh more).
Which metrics (`metric_set`):
  libmtl       (default) each task's metrics as LibMTL compares them (`Metric.delta_m_metrics`): segmentation miou,
               pixel_acc; depth abs_err, rel_err; normals angle_mean, angle_median, within_11.25/22.5/30; edges
               ods_f; attributes accuracy, f1; regression mse;
  all          every metric the results and the baseline share for a task (depth rmse and delta1 too), except
               per-entry ones (`accuracy/3`).
`metrics` names the (task, metric) pairs explicitly instead. Every report also lists each metric's and each task's
relative change, so a per-task comparison needs no option. Both sides must use msp's units: a fraction metric
(`Metric.fractions`: miou, pixel_acc, delta1, within_*, ods_f, accuracy, f1) outside [0, 1] is refused as a percentage.
A metric whose relative change is undefined — a baseline of 0 (an attribute head that never predicts "present" has
F1 = 0), or a value that is not finite (F1 with zero_division=nan) — is left out of Δm and named (`DeltaM.left_out`);
only when nothing is left is that an error.

The command line is experiments/reports/delta_m.py. Results files are what experiments/evaluate.py writes ({"results": {task: {metric: value}}, ...}), what
experiments/adapt_unseen.py writes ({"unseen": {...}, "seen": {...}}: both parts are read), or bare
{task: {metric: value}} maps; several files (one single-task run each) are merged by task.
"""
import dataclasses
import json
import math
from typing import Mapping, Sequence

from msp.tasks import metrics

CONVENTIONS = ("task_mean", "metric_mean")
METRIC_SETS = ("libmtl", "all")
Results = Mapping[str, Mapping[str, float]]

# One instance of every metric kind msp reports, for the per-name tables below.
_METRICS = (metrics.SegmentationMetric(1), metrics.DepthMetric(), metrics.NormalsMetric(), metrics.EdgeMetric(),
            metrics.AttributeMetric(1), metrics.RegressionMetric())
# Direction of every metric msp's metrics report (higher is better?); per-entry names (`f1/3`) are not compared.
METRIC_DIRECTIONS: dict[str, bool] = {
    name: better for metric in _METRICS for name, better in metric.higher_is_better.items() if "/" not in name}
LIBMTL_METRICS: frozenset[str] = frozenset(name for metric in _METRICS for name in metric.delta_m_metrics)
FRACTION_METRICS: frozenset[str] = frozenset(name for metric in _METRICS for name in metric.fractions)


@dataclasses.dataclass(frozen=True)
class DeltaM:
  """Δm and its parts, all in percent (positive = better than the baseline).

  per_metric: (task, metric) → (−1)^{l_m}·100·(M − M_b)/M_b; per_task: task → the mean over its metrics;
  value: Δm under `convention`; metric_set: which metrics were compared ("libmtl", "all" or "named"); left_out:
  (task, metric) → why its relative change is undefined (module docstring), not part of Δm.
  """
  value: float
  convention: str
  metric_set: str
  per_metric: dict[tuple[str, str], float]
  per_task: dict[str, float]
  left_out: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)


def relative_change(value: float, baseline: float, higher_is_better: bool) -> float:
  """(−1)^{l}·100·(value − baseline)/baseline in percent, l = 1 when lower is better; ValueError on a zero or
  non-finite baseline or value."""
  if not (math.isfinite(value) and math.isfinite(baseline) and baseline != 0):
    raise ValueError(f"cannot compare {value} with baseline {baseline}")
  return 100.0 * ((value - baseline) if higher_is_better else (baseline - value)) / baseline


def delta_m(results: Results, baseline: Results, convention: str = "task_mean",
            metrics_to_compare: Sequence[tuple[str, str]] | None = None,
            directions: Mapping[str, bool] = METRIC_DIRECTIONS, metric_set: str = "libmtl") -> DeltaM:
  """Δm of `results` against `baseline` ({task: {metric: value}} each).

  metrics_to_compare: (task, metric) pairs; None: the metrics of `metric_set` (module docstring) that both have for
  a task they share. directions: metric name → higher is better. Metrics with an undefined relative change are left
  out (`DeltaM.left_out`). Raises ValueError naming what cannot be compared: a missing metric, an unknown direction,
  a fraction outside [0, 1], or no metric left to compare.
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"convention {convention!r}; choose one of {CONVENTIONS}")
  if metric_set not in METRIC_SETS:
    raise ValueError(f"metric_set {metric_set!r}; choose one of {METRIC_SETS}")
  if metrics_to_compare is None:
    wanted = (lambda name: name in LIBMTL_METRICS) if metric_set == "libmtl" else (lambda name: "/" not in name)
    metrics_to_compare = [(task, name) for task in results if task in baseline
                          for name in results[task] if name in baseline[task] and wanted(name)]
  else:
    metric_set = "named"
  if not metrics_to_compare:
    raise ValueError(f"no metric to compare: results have tasks {sorted(results)}, the baseline {sorted(baseline)}")
  per_metric, left_out = {}, {}
  for task, name in metrics_to_compare:
    for source, values in (("results", results), ("baseline", baseline)):
      if name not in values.get(task, {}):
        raise ValueError(f"{task}:{name} is missing from the {source}")
    if name not in directions:
      raise ValueError(f"{task}:{name}: unknown direction; known metrics: {sorted(directions)}")
    value, base = results[task][name], baseline[task][name]
    for source, v in (("results", value), ("baseline", base)):
      if name in FRACTION_METRICS and math.isfinite(v) and not 0 <= v <= 1:
        raise ValueError(f"{task}:{name} is {v} in the {source}, but it is a fraction in [0, 1] — a percentage? "
                         f"msp reports fractions")
    try:
      per_metric[task, name] = relative_change(value, base, directions[name])
    except ValueError as e:
      left_out[task, name] = str(e)
  if not per_metric:
    raise ValueError("no metric to compare: " + "; ".join(f"{t}:{m}: {why}" for (t, m), why in left_out.items()))
  tasks = list(dict.fromkeys(task for task, _ in per_metric))
  per_task = {task: _mean([v for (t, _), v in per_metric.items() if t == task]) for task in tasks}
  value = _mean(list(per_task.values()) if convention == "task_mean" else list(per_metric.values()))
  return DeltaM(value=value, convention=convention, metric_set=metric_set, per_metric=per_metric, per_task=per_task,
                left_out=left_out)


def _mean(values: Sequence[float]) -> float:
  return sum(values) / len(values)


def result_parts(payload: Mapping) -> dict[str, dict[str, dict[str, float]]]:
  """{"seen": {task: {metric: value}}, "unseen": {...}} of a results file's contents: evaluate.py's ("results": the
  seen tasks), adapt_unseen.py's ("unseen", and "seen", which is null when it was not scored) or a bare map (seen)."""
  if "unseen" in payload:
    return {"seen": dict(payload.get("seen") or {}), "unseen": dict(payload["unseen"])}
  return {"seen": dict(payload.get("results", payload)), "unseen": {}}


def load_results(paths: Sequence[str]) -> dict[str, dict[str, float]]:
  """{task: {metric: value}} from results files (evaluate.py's or adapt_unseen.py's JSON, or a bare map; both parts
  of `result_parts`), merged by task; ValueError when two files hold the same task."""
  merged = {}
  for path in paths:
    with open(path, encoding="utf-8") as f:
      payload = json.load(f)
    parts = result_parts(payload)
    for task, values in ((t, v) for part in (parts["unseen"], parts["seen"]) for t, v in part.items()):
      if task in merged:
        raise ValueError(f"task {task!r} appears in more than one of {list(paths)}")
      merged[task] = values
  return merged


def report(delta: DeltaM, results: Results, baseline: Results) -> str:
  """Markdown: a row per compared metric (↑/↓ = better direction), a row per task, then Δm and its convention."""
  lines = ["| task | metric | baseline | result | Δ (%) |", "|---|---|---|---|---|"]
  for (task, name), change in delta.per_metric.items():
    arrow = "↑" if METRIC_DIRECTIONS.get(name, True) else "↓"
    lines.append(f"| {task} | {name} {arrow} | {baseline[task][name]:.4g} | {results[task][name]:.4g} | "
                 f"{change:+.2f} |")
  lines += [f"| {task} | (task mean) | | | {change:+.2f} |" for task, change in delta.per_task.items()]
  how = ("mean over tasks of the within-task mean (LibMTL)" if delta.convention == "task_mean"
         else "flat mean over all compared metrics")
  which = {"libmtl": "each task's metrics as LibMTL compares them", "all": "every metric both files share",
           "named": "the metrics named"}[delta.metric_set]
  left_out = "".join(f"\n- left out: {task}:{name} ({why})" for (task, name), why in delta.left_out.items())
  return "\n".join(lines) + (f"\n\nΔm = {delta.value:+.2f} % (convention {delta.convention}: {how}; metrics "
                             f"{delta.metric_set}: {which})") + left_out
