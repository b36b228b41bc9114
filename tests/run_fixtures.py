"""Shared by the run-integrity and fault-injection tests: tiny synthetic runs, their states, logs and files."""
import os
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np

from experiments.configs import synthetic
from experiments.run.training import open_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANT = "budget,tiny"
CONFIG = f"experiments/configs/synthetic.py:{VARIANT}"


def with_overrides(config, **overrides):
  """A copy of `config` with dotted keys ("meta.inner_lr") set."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def tiny_config(data_dir: str, **overrides):
  """The `budget,tiny` synthetic config on `data_dir` with dotted-key overrides."""
  config = synthetic.get_config(VARIANT)
  config.data.data_dir = data_dir
  return with_overrides(config, **overrides)


def meta_train_command(data_dir: str, workdir: str, **overrides) -> list[str]:
  """The meta_train.py command line of `tiny_config(data_dir, **overrides)`."""
  return [sys.executable, "experiments/meta_train.py", f"--config={CONFIG}",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
          *(f"--config.{key}={value}" for key, value in overrides.items())]


def start(command: list[str], **kwargs) -> subprocess.Popen:
  return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)


def state_leaves(config, workdir: str, step: int | None = None) -> list[np.ndarray]:
  """The leaves of checkpoint `step` (None: the latest) of the run in `workdir`, as numpy arrays."""
  run = open_run(config, workdir)
  try:
    return [np.asarray(x) for x in jax.tree.leaves(run.trained_state(step)[1])]
  finally:
    run.close()


def assert_bitwise_equal(a: list[np.ndarray], b: list[np.ndarray]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def snapshot(directory: str) -> dict[str, tuple[int, float, bytes]]:
  """{path: (size, mtime, first bytes)} of every file below `directory`."""
  out = {}
  for d, _, files in os.walk(directory):
    for f in files:
      path = os.path.join(d, f)
      with open(path, "rb") as handle:
        out[path] = (os.path.getsize(path), os.path.getmtime(path), handle.read(4096))
  return out


def copy_run(source: str, destination: str) -> str:
  shutil.copytree(source, destination)
  return destination


def jsonl_steps(workdir: str, key: str = "loss") -> list[int]:
  """The step of every line of WORKDIR/metrics.jsonl that holds `key`, in file order (duplicates kept)."""
  import json  # pylint: disable=import-outside-toplevel
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [r["step"] for r in map(json.loads, f) if key in r]


def tensorboard_scalars(workdir: str, tag: str) -> list[tuple[int, float]]:
  """(step, value) of every `tag` scalar in WORKDIR/tensorboard's event files, in file and record order."""
  return [(step, value) for t, step, value in tensorboard_values(workdir) if t == tag]


def tensorboard_values(workdir: str) -> list[tuple[str, int, float]]:
  """(tag, step, simple value) of every summary value in WORKDIR/tensorboard's event files, in file and record order.

  An independent reader of the TFRecord framing (length, its CRC, payload, its CRC; CRCs not checked) and of the
  Event protocol buffer fields a scalar uses, so that the writer is not tested with its own code."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  directory = os.path.join(workdir, "tensorboard")
  out = []
  for name in sorted(os.listdir(directory)):
    if "tfevents" not in name:
      continue
    with open(os.path.join(directory, name), "rb") as f:
      data = f.read()
    offset = 0
    while offset + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      payload = data[offset + 12:offset + 12 + length]
      offset += 12 + length + 4
      event = event_pb2.Event.FromString(payload)
      out.extend((v.tag, event.step, v.simple_value) for v in event.summary.value)
  return out
