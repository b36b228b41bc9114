"""Scalar logs of a run: one JSON line per record in `<workdir>/metrics.jsonl`, and TensorBoard event files.

TensorBoard events are written with tensorboardX's protos and record framing, which need no TensorFlow, in the
calling thread: a failed write (a full disk) raises at once as a WriteError naming the file, where a background
writer thread would die and leave its queue to block the training loop. Vector metrics (one value per sparsified
layer or per task) are split into one scalar per entry, named `<metric>/<entry name>`.

A resumed run recomputes the steps after its checkpoint, so `MetricWriter(..., resume_step=N)` first removes every
record and event of a step after N from both logs: each step is logged once however often a run is resumed.

In a workdir on an object store (`gs://...`), where files cannot be appended to, both logs are kept in memory and
uploaded whole at most every UPLOAD_EVERY_S seconds, at every `flush()` (training calls it before each checkpoint,
so a resumed run loses no logged step) and at `close()`.
"""
import json
import os
import socket
import struct
import time
from typing import Any, Mapping, Sequence

import numpy as np
from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import RecordWriter, masked_crc32c
from tensorboardX.summary import hparams

from msp.train.files import as_path, is_remote, write_text_atomic, writing

_EVENTS_GLOB = "events.out.tfevents.*"
_REWRITE_TMP = "rewrite.tmp"  # no "tfevents" in the name: TensorBoard ignores it while it is written
UPLOAD_EVERY_S = 30.0


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


def config_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, float | str | bool]:
  """A nested config → {"a.b": value} for TensorBoard's hparams: numbers, strings and booleans as they are,
  anything else (tuples, None) as its repr."""
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(config_hparams(value, name + "."))
    else:
      flat[name] = value if isinstance(value, (bool, int, float, str)) else repr(value)
  return flat


class MetricWriter:
  """Appends scalar records to `<workdir>/metrics.jsonl` and to a TensorBoard event file under
  `<workdir>/tensorboard`, both flushed after every record.

  names: entry names for vector metrics, e.g. {"lambda": layer names, "task_loss": task names}.
  resume_step: the step the run resumes from; records and events of later steps are removed first (None: a new
  log, or keep everything).
  Raises WriteError (naming the file) when a log cannot be written.
  """

  def __init__(self, workdir: str, names: Mapping[str, Sequence[str]] | None = None, resume_step: int | None = None):
    self.names = dict(names or {})
    self.path = as_path(workdir) / "metrics.jsonl"
    self.tensorboard_dir = as_path(workdir) / "tensorboard"
    if resume_step is not None:
      truncate_jsonl(self.path, resume_step)
      truncate_events(self.tensorboard_dir, resume_step)
    # the pid keeps two writers opened within one second (a quick resume) from sharing a file name
    self.events_path = self.tensorboard_dir / (
        f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}")
    self.remote = is_remote(workdir)
    with writing(self.events_path):
      self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
    if self.remote:
      self._lines = [self.path.read_text(encoding="utf-8")] if self.path.exists() else []
      self._records: list[bytes] = []
      self._uploaded = time.monotonic()
    else:
      with writing(self.path):
        self._jsonl = open(self.path, "a", encoding="utf-8")
      with writing(self.events_path):
        self._events = RecordWriter(os.fspath(self.events_path))
    self._write_events([event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")])

  def write(self, step: int, record: Mapping[str, object]) -> dict[str, float]:
    """Writes one record at outer step `step`; returns the flat scalars written."""
    flat = flatten_scalars({k: v for k, v in record.items() if k != "step"}, self.names)
    line = json.dumps({"step": int(step), **flat}) + "\n"
    if self.remote:
      self._lines.append(line)
    else:
      with writing(self.path):
        self._jsonl.write(line)
        self._jsonl.flush()
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)
                                         for tag, value in flat.items()])
    self._write_events([event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)])
    return flat

  def write_hparams(self, config: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """The run's config as TensorBoard hparams (the HPARAMS tab), with `metrics` (scalar tags) as its metrics."""
    summaries = hparams(config_hparams(config), {m: None for m in metrics})
    self._write_events([event_pb2.Event(wall_time=time.time(), summary=s) for s in summaries])

  def _write_events(self, events: Sequence[event_pb2.Event]) -> None:
    if self.remote:
      self._records.extend(framed(event.SerializeToString()) for event in events)
      if time.monotonic() - self._uploaded >= UPLOAD_EVERY_S:
        self.flush()
      return
    with writing(self.events_path):
      for event in events:
        self._events.write(event.SerializeToString())
      self._events.flush()

  def flush(self) -> None:
    """Makes both files hold every record written so far (local files always do; a remote workdir's are uploaded)."""
    if self.remote:
      with writing(self.path):
        self.path.write_text("".join(self._lines), encoding="utf-8")
      with writing(self.events_path):
        self.events_path.write_bytes(b"".join(self._records))
      self._uploaded = time.monotonic()

  def close(self) -> None:
    """Closes both files (a close that fails to flush raises WriteError)."""
    if self.remote:
      self.flush()
      return
    try:
      with writing(self.path):
        self._jsonl.close()
    finally:
      with writing(self.events_path):
        self._events.close()


def framed(serialized: bytes) -> bytes:
  """One record of a TensorBoard event file: length, its masked CRC-32C, the data and its masked CRC-32C."""
  header = struct.pack("Q", len(serialized))
  return (header + struct.pack("I", masked_crc32c(header)) + serialized +
          struct.pack("I", masked_crc32c(serialized)))


def read_jsonl(path: str) -> list[dict]:
  """The records of a metrics.jsonl, one per step in step order; records of the same step (training metrics and
  evaluation) are merged, later keys winning."""
  by_step = {}
  for line in as_path(path).read_text(encoding="utf-8").splitlines():
    record = json.loads(line)
    by_step.setdefault(record["step"], {}).update(record)
  return [by_step[s] for s in sorted(by_step)]


def per_entry(records: Sequence[Mapping[str, float]], metric: str, labels: Sequence[str]) -> list[list[float]]:
  """(records, len(labels)) values of a vector metric that `flatten_scalars` logged as `<metric>/<label>` (e.g. λ per
  layer), one row per record of `read_jsonl`."""
  return [[r[f"{metric}/{label}"] for label in labels] for r in records]


def truncate_jsonl(path: str, last_step: int) -> None:
  """Drops the records of steps after `last_step` from a metrics.jsonl (rewritten through a rename), and a last
  line left half-written by a killed process."""
  path = as_path(path)
  if not path.exists():
    return
  kept = []
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if record["step"] <= last_step:
      kept.append(line + "\n")
  write_text_atomic(path, "".join(kept))


def read_events(path: str) -> list[event_pb2.Event]:
  """The events of one TensorBoard event file (TFRecord framing); a truncated or damaged tail is dropped."""
  events = []
  data = as_path(path).read_bytes()
  offset = 0
  while offset + 12 <= len(data):
    header = data[offset:offset + 8]
    (length,) = struct.unpack("Q", header)
    end = offset + 12 + length + 4
    if struct.unpack("I", data[offset + 8:offset + 12])[0] != masked_crc32c(header) or end > len(data):
      break
    payload = data[offset + 12:end - 4]
    if struct.unpack("I", data[end - 4:end])[0] != masked_crc32c(payload):
      break
    events.append(event_pb2.Event.FromString(payload))
    offset = end
  return events


def truncate_events(directory: str, last_step: int) -> None:
  """Rewrites the TensorBoard event files of `directory` into one without the events of steps after `last_step`.

  The kept events go to a temporary file, the old files are removed and the temporary one is renamed after the
  oldest event; a process killed on the way leaves the temporary file, which the next call reads again (exact
  duplicates dropped)."""
  directory = as_path(directory)
  tmp = directory / _REWRITE_TMP
  files = sorted(directory.glob(_EVENTS_GLOB)) if directory.is_dir() else []
  sources = ([tmp] if tmp.exists() else []) + files
  if not sources:
    return
  kept, seen, dropped, first_time = [], set(), False, time.time()
  for path in sources:
    for event in read_events(path):
      serialized = event.SerializeToString()
      first_time = min(first_time, event.wall_time)
      if event.HasField("file_version") or serialized in seen:
        continue
      if event.step > last_step:
        dropped = True
        continue
      seen.add(serialized)
      kept.append(serialized)
  if not dropped and len(sources) == 1 and sources[0] != tmp:
    return
  version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()
  with writing(directory):
    new = tmp.with_name(_REWRITE_TMP + ".new")
    new.write_bytes(b"".join(framed(serialized) for serialized in [version, *kept]))
    new.replace(tmp)
    for path in files:
      path.unlink()
    # named by its oldest event: TensorBoard reads files in name order, and a step older than one already read would
    # make it discard the newer ones (it takes that for a restart)
    tmp.replace(directory / f"events.out.tfevents.{int(first_time)}.{socket.gethostname()}.msp")
