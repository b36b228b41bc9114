"""Task registry: a task kind → how to build its head, loss and metric. A new task kind is one entry in `TASK_KINDS`.

A config names its tasks in `config.tasks` (name → {kind, options}); `build_tasks` turns them into `Task`s in the
order the caller asks for (the order of a meta-batch's task mask).
"""
import dataclasses
import functools
import inspect
from typing import Callable, NamedTuple, Sequence

import jax
import ml_collections

from msp.schema import REQUIRED, Bool, Check, Choice, Int, Key, Real, Text
from msp.tasks import losses, metrics

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """One task: its head kind ("dense" | "attribute"), output channels, loss and evaluation metric.

  loss(raw_output, target) → scalar; metric accumulates (raw_output, target) batches (see `msp.tasks.metrics`).
  """
  name: str
  kind: str
  head: str
  channels: int
  loss: LossFn
  metric: metrics.Metric


class TaskKind(NamedTuple):
  """What a task kind's options build: every `Task` field except name and kind."""
  head: str
  channels: int
  loss: LossFn
  metric: metrics.Metric


def _segmentation(num_classes: int, ignore_index: int = -1, label_smoothing: float = 0.0) -> TaskKind:
  if not 0 <= label_smoothing < 1:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
  loss = functools.partial(losses.segmentation_loss, ignore_index=ignore_index, label_smoothing=label_smoothing)
  return TaskKind("dense", num_classes, loss, metrics.SegmentationMetric(num_classes, ignore_index))


def _depth(normalization: str = "none") -> TaskKind:
  if normalization not in losses.DEPTH_NORMALIZATIONS:
    raise ValueError(f"normalization {normalization!r}; choose one of {losses.DEPTH_NORMALIZATIONS}")
  return TaskKind("dense", 1, functools.partial(losses.depth_loss, normalization=normalization),
                  metrics.DepthMetric(normalization))


def _normals(median_resolution: float = 0.01) -> TaskKind:
  return TaskKind("dense", 3, losses.normals_loss, metrics.NormalsMetric(median_resolution))


EDGE_LOSSES = ("balanced_bce", "huber")


def _edges(thresholds: int = 99, loss: str = "balanced_bce", huber_delta: float = 0.2, max_dist: float = 0.0075,
           thin: bool = True) -> TaskKind:
  if loss not in EDGE_LOSSES:
    raise ValueError(f"loss {loss!r}; choose one of {EDGE_LOSSES}")
  loss_fn = losses.edge_loss if loss == "balanced_bce" else functools.partial(losses.edge_huber_loss, delta=huber_delta)
  metric = metrics.EdgeMetric(thresholds=thresholds, max_dist=max_dist, thin=thin)
  return TaskKind("dense", 1, loss_fn, metric)


def _attributes(num_attributes: int, zero_division: float = 0.0) -> TaskKind:
  return TaskKind("attribute", num_attributes, losses.attribute_loss,
                  metrics.AttributeMetric(num_attributes, zero_division))


def _regression(channels: int = 1) -> TaskKind:
  return TaskKind("dense", channels, losses.regression_loss, metrics.RegressionMetric())


TASK_KINDS: dict[str, Callable[..., TaskKind]] = {
    "segmentation": _segmentation,
    "depth": _depth,
    "normals": _normals,
    "edges": _edges,
    "attributes": _attributes,
    "regression": _regression,
}

# What each kind's options may hold and mean (their defaults are the kind functions' own); `resume=True` marks an
# option that only changes how a task is scored, never the state.
_OPTION_CHECKS: dict[str, dict[str, tuple[Check, str, bool]]] = {
    "segmentation": {"num_classes": (Int(1), "classes (the head's output channels)", False),
                     "ignore_index": (Int(-1), "the label of void pixels after loading (excluded from loss and metric)",
                                      False),
                     "label_smoothing": (Real(0, 1, high_open=True), "label smoothing of the cross-entropy", False)},
    "depth": {"normalization": (Choice(losses.DEPTH_NORMALIZATIONS), "`none`: metres; `per_image_max`: each image "
                                "divided by its largest depth, for loss and metric (the authors')", False)},
    "normals": {"median_resolution": (Real(0, low_open=True), "the metric's median angle resolution, degrees",
                                      True)},
    "edges": {"thresholds": (Int(1), "probability thresholds of the ODS F-measure", True),
              "loss": (Choice(EDGE_LOSSES), "`balanced_bce` (HED) or `huber` (the authors': Huber on sigmoid)",
                       False),
              "huber_delta": (Real(0, low_open=True), "the Huber loss's δ", False),
              "max_dist": (Real(0, low_open=True), "matching radius, a fraction of the image diagonal (BSDS 0.0075, "
                           "NYUD-v2 0.011)", True),
              "thin": (Bool(), "thin predictions to one-pixel curves before matching", True)},
    "attributes": {"num_attributes": (Int(1), "attributes predicted (the head's outputs)", False),
                   "zero_division": (Choice((0.0, 1.0)), "F1 of an attribute with no positive predicted nor present",
                                     True)},
    "regression": {"channels": (Int(1), "output channels", False)},
}
# Options every kind accepts, read by the input pipeline (data_pipelines.episodes.target_spec): where the target
# comes from.
DATA_OPTIONS = {
    "feature": Key(None, Text(optional=True), "the raw example's feature holding the target (default: the kind)",
                   required=False),
    "attributes": Key(None, Check(), "the dataset attribute names an `attributes` task predicts (default: its name)",
                      required=False),
    "void_value": Key(None, Int(0, optional=True), "raw segmentation label of void pixels (default 255)",
                      required=False),
}


def task_options(kind: str) -> dict[str, Key]:
  """{option: Key} of task kind `kind` (one of TASK_KINDS): `kind` itself, the kind's options with their defaults
  (REQUIRED where the kind function has none; every option may be left out of a config but those), and
  DATA_OPTIONS."""
  signature = inspect.signature(TASK_KINDS[kind]).parameters
  options = {"kind": Key(REQUIRED, Choice(tuple(TASK_KINDS)), "the task kind (default: the task's name)",
                         required=False)}
  for name, (check, meaning, resume) in _OPTION_CHECKS[kind].items():
    default = signature[name].default
    required = default is inspect.Parameter.empty
    options[name] = Key(REQUIRED if required else default, check, meaning, resume=resume, required=required)
  return {**options, **DATA_OPTIONS}


def build_task(name: str, kind: str, **options) -> Task:
  """Builds task `name` of registered `kind` with the kind's options.

  Options per kind (defaults in parentheses): segmentation num_classes, ignore_index (-1), label_smoothing (0.0);
  depth normalization ("none": metres; "per_image_max": the authors' division by each image's maximum depth, for
  loss and metric alike, see `losses.normalize_depth`); normals median_resolution (0.01 degrees); edges (scored by
  the standard thinned, one-to-one boundary matching, `metrics.EdgeMetric`) max_dist (0.0075 of the image
  diagonal; 0.011 is the NYUD-v2 convention), thin (True), thresholds (99), loss ("balanced_bce"; "huber": the
  authors' Huber loss on sigmoid(logits)), huber_delta (0.2); attributes num_attributes; regression channels (1).
  """
  if kind not in TASK_KINDS:
    raise ValueError(f"task {name!r}: unknown kind {kind!r}; choose one of {sorted(TASK_KINDS)}")
  try:
    built = TASK_KINDS[kind](**options)
  except (TypeError, ValueError) as e:
    raise ValueError(f"task {name!r} of kind {kind!r}: bad options {options}: {e}") from None
  return Task(name=name, kind=kind, **built._asdict())


def build_tasks(task_configs: ml_collections.ConfigDict, names: Sequence[str]) -> tuple[Task, ...]:
  """Tasks `names`, in that order, from `task_configs[name] = {kind: ..., <options>}` (DATA_OPTIONS skipped)."""
  tasks = []
  for name in names:
    if name not in task_configs:
      raise ValueError(f"task {name!r} is not defined in config.tasks (defined: {sorted(task_configs)})")
    options = {k: v for k, v in dict(task_configs[name]).items() if k not in DATA_OPTIONS}
    kind = options.pop("kind", name)
    tasks.append(build_task(name, kind, **options))
  return tuple(tasks)
