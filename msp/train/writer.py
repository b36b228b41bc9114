"""Scalar logs of a run: one JSON line per record in `<workdir>/metrics.jsonl`, and TensorBoard event files.

TensorBoard events are written with tensorboardX, which needs no TensorFlow. Vector metrics (one value per
sparsified layer or per task) are split into one scalar per entry, named `<metric>/<entry name>`.
"""
import json
import os
from typing import Mapping, Sequence

import numpy as np
from tensorboardX import SummaryWriter


def flatten_scalars(record: Mapping[str, object], names: Mapping[str, Sequence[str]] | None = None,
                    ) -> dict[str, float]:
  """{metric: scalar or (N,) array} → {tag: float}; `names[metric]` names the N entries (default: their index)."""
  names = names or {}
  flat = {}
  for key, value in record.items():
    array = np.asarray(value, np.float64)
    if array.ndim == 0:
      flat[key] = float(array)
      continue
    labels = names.get(key, [str(i) for i in range(array.size)])
    for label, entry in zip(labels, array.reshape(-1)):
      flat[f"{key}/{label}"] = float(entry)
  return flat


class MetricWriter:
  """Appends scalar records to `<workdir>/metrics.jsonl` and to TensorBoard events under `<workdir>/tensorboard`.

  names: entry names for vector metrics, e.g. {"lambda": layer names, "task_loss": task names}. A resumed run
  appends to the same files; records carry their outer step, so a reader can keep the last record per step.
  """

  def __init__(self, workdir: str, names: Mapping[str, Sequence[str]] | None = None):
    self.names = dict(names or {})
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._jsonl = open(self.path, "a", encoding="utf-8")
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, record: Mapping[str, object]) -> dict[str, float]:
    """Writes one record at outer step `step`; returns the flat scalars written."""
    flat = flatten_scalars({k: v for k, v in record.items() if k != "step"}, self.names)
    self._jsonl.write(json.dumps({"step": int(step), **flat}) + "\n")
    self._jsonl.flush()
    for tag, value in flat.items():
      self._tensorboard.add_scalar(tag, value, int(step))
    return flat

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()


def read_jsonl(path: str) -> list[dict]:
  """The records of a metrics.jsonl, keeping the last record written for each step, in step order."""
  by_step = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      by_step[record["step"]] = record
  return [by_step[s] for s in sorted(by_step)]
