"""Task registry: a task kind → how to build its head and loss. A new task kind is one entry in `TASK_KINDS`.

A config names its tasks in `config.tasks` (name → {kind, options}); `build_tasks` turns them into `Task`s in the
order the caller asks for (the order of a meta-batch's task mask).
"""
import dataclasses
import functools
from typing import Callable, Sequence

import jax
import ml_collections

from msp.tasks import losses

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """One task: its head kind ("dense" | "attribute"), output channels and loss(raw_output, target) → scalar."""
  name: str
  kind: str
  head: str
  channels: int
  loss: LossFn


def _segmentation(num_classes: int, ignore_index: int = -1):
  return "dense", num_classes, functools.partial(losses.segmentation_loss, ignore_index=ignore_index)


def _attributes(num_attributes: int):
  return "attribute", num_attributes, losses.attribute_loss


def _regression(channels: int = 1):
  return "dense", channels, losses.regression_loss


TASK_KINDS: dict[str, Callable[..., tuple[str, int, LossFn]]] = {
    "segmentation": _segmentation,
    "depth": lambda: ("dense", 1, losses.depth_loss),
    "normals": lambda: ("dense", 3, losses.normals_loss),
    "edges": lambda: ("dense", 1, losses.edge_loss),
    "attributes": _attributes,
    "regression": _regression,
}


def build_task(name: str, kind: str, **options) -> Task:
  """Builds task `name` of registered `kind` with the kind's options (e.g. num_classes)."""
  if kind not in TASK_KINDS:
    raise ValueError(f"task {name!r}: unknown kind {kind!r}; choose one of {sorted(TASK_KINDS)}")
  try:
    head, channels, loss = TASK_KINDS[kind](**options)
  except TypeError as e:
    raise ValueError(f"task {name!r} of kind {kind!r}: bad options {options}: {e}") from None
  return Task(name=name, kind=kind, head=head, channels=channels, loss=loss)


def build_tasks(task_configs: ml_collections.ConfigDict, names: Sequence[str]) -> tuple[Task, ...]:
  """Tasks `names`, in that order, from `task_configs[name] = {kind: ..., <options>}`."""
  tasks = []
  for name in names:
    if name not in task_configs:
      raise ValueError(f"task {name!r} is not defined in config.tasks (defined: {sorted(task_configs)})")
    options = dict(task_configs[name])
    kind = options.pop("kind", name)
    tasks.append(build_task(name, kind, **options))
  return tuple(tasks)
