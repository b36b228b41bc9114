"""A comparison sweep's runs, their stages and the ETA (what experiments/sweep.py runs; its docstring has the
layout and the stages)."""
import ast
import dataclasses
import importlib
import json
import os
import sys
import time
from typing import Callable

import ml_collections

from experiments.run.unseen import adapt_and_write
from experiments.run.scoring import evaluate_and_write
from experiments.run.deployment import ExportOptions, export_run
from experiments.run.comparison import FINETUNED, finetune
from experiments.run.magnitude import prune_run
from experiments.run.training import Preempted, best_step, load_config, open_run, train
from msp.train.config import ConfigError
from msp.train.files import as_path, write_text_atomic

# Separates a method's variant arg from its run-config overrides: "budget,flops=0.25+budget.scale_lr=0.005".
OVERRIDE = "+"


@dataclasses.dataclass(frozen=True)
class Job:
  """One run of the sweep: `method` at `seed`, in `workdir`; `source`: the dense_mtl run a magnitude run prunes (None
  otherwise). A method is a variant arg of the dataset config (e.g. "budget,flops=0.25"), optionally followed by
  run-config overrides, each `+KEY=VALUE` (e.g. "+steps=1200+sparsity.weighting=unweighted"): the method string is
  the run's label, so variants of one method get rows of their own in the tables."""
  method: str
  seed: int
  workdir: str
  source: str | None = None

  @property
  def arg(self) -> str:
    """The variant arg (the method without its overrides)."""
    return self.method.split(OVERRIDE)[0]

  @property
  def variant(self) -> str:
    return self.arg.split(",")[0]

  @property
  def target(self) -> dict | None:
    """The variant arg's `key=value` modifiers (its cost target), None without."""
    pairs = [m.split("=", 1) for m in self.arg.split(",")[1:]]
    return {k: _number(v) for k, v in pairs} or None

  @property
  def overrides(self) -> list[tuple[str, str | None]]:
    """The method's run-config overrides, (dotted key, value as written; None without `=`), in order."""
    return [(part.split("=", 1) + [None])[:2] for part in self.method.split(OVERRIDE)[1:]]

  @property
  def finetuned(self) -> str:
    return os.path.join(self.workdir, FINETUNED)


def _number(text: str):
  try:
    return float(text)
  except ValueError:
    return text


def job_dir(root: str, method: str, seed: int) -> str:
  return os.path.join(root, method.replace(",", "_"), f"seed{seed}")


def plan(sweep: ml_collections.ConfigDict, root: str) -> list[list[Job]]:
  """The sweep's runs in units that share nothing with other units (a dense_mtl run and the magnitude runs that
  prune it form one unit, the dense run first); dense_mtl runs are added where magnitude runs need them."""
  methods = list(sweep.methods)
  if any(m.startswith("magnitude") for m in methods) and "dense_mtl" not in methods:
    methods.insert(0, "dense_mtl")
  units = []
  for method in methods:
    if method.startswith("magnitude"):
      continue
    for seed in sweep.seeds:
      unit = [Job(method, seed, job_dir(root, method, seed))]
      if method == "dense_mtl":
        unit += [Job(m, seed, job_dir(root, m, seed), source=unit[0].workdir) for m in methods
                 if m.startswith("magnitude")]
      units.append(unit)
  return units


def parse_shard(text: str) -> tuple[int, int]:
  """"i/n" → (i, n) with 1 ≤ i ≤ n; ConfigError otherwise."""
  try:
    i, n = (int(part) for part in text.split("/"))
  except ValueError:
    i = n = 0
  if not 1 <= i <= n:
    raise ConfigError(f"--shard={text!r} must be i/n with 1 ≤ i ≤ n, e.g. 1/2")
  return i, n


def job_config(sweep: ml_collections.ConfigDict, job: Job) -> ml_collections.ConfigDict:
  """The run config of `job`: experiments/configs/<dataset>.py:<variant arg>[,tiny] with the seed, the sweep's
  overrides, then the method's own. ConfigError for a method the dataset config does not know, or an override of a
  key the run config lacks or with a value of the wrong type."""
  module = importlib.import_module(f"experiments.configs.{sweep.dataset}")
  try:
    config = module.get_config(job.arg + (",tiny" if sweep.tiny else ""))
  except ValueError as e:
    raise ConfigError(f"config.methods: {e}") from e
  config.seed = job.seed
  for key, value in (("data.data_dir", sweep.data_dir), ("data.manual_dir", sweep.manual_dir),
                     ("steps", sweep.steps), ("finetune.steps", sweep.finetune_steps)):
    found = _section_of(config, key)  # None: a key this dataset config lacks (manual_dir of the embedded data)
    if value is not None and found is not None:
      node, leaf = found
      node[leaf] = value
  for key, text in job.overrides:
    _override(config, key, text, job.method)
  return config


def _section_of(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str] | None:
  """(the section that holds the dotted `key`, the key's last part); None when `config` lacks the key."""
  *sections, leaf = key.split(".")
  node = config
  for section in sections:
    node = node.get(section)
    if not isinstance(node, ml_collections.ConfigDict):
      return None
  return (node, leaf) if leaf in node else None


def _override(config: ml_collections.ConfigDict, key: str, text: str | None, method: str) -> None:
  """config[key] = text read as a Python literal (else as the string itself); ConfigError naming `method` when
  the key does not exist or the value does not fit its type."""
  if text is None:
    raise ConfigError(f"config.methods: {method!r}: the override {key!r} is not KEY=VALUE")
  found = _section_of(config, key)
  if found is None:
    raise ConfigError(f"config.methods: {method!r}: {key!r} is not a key of the run config")
  node, leaf = found
  if isinstance(node[leaf], ml_collections.ConfigDict):
    raise ConfigError(f"config.methods: {method!r}: {key!r} is a section, not a value")
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.methods: {method!r}: {key}={text!r} does not fit the key ({e})") from None


def committed_steps(workdir: str) -> list[int]:
  """The steps of the run's committed checkpoints (orbax names a save in progress otherwise)."""
  path = as_path(workdir) / "checkpoints"
  return sorted(int(d.name) for d in path.iterdir() if d.name.isdigit()) if path.is_dir() else []


def _result_step(workdir: str) -> int | None:
  """The checkpoint a run's results are of: its best, else its latest."""
  steps = committed_steps(workdir)
  return best_step(workdir) or (steps[-1] if steps else None)


def _written(workdir: str, folder: str, stem: str, step: int | None) -> bool:
  return step is not None and (as_path(workdir) / folder / f"{stem}_step{step}.json").exists()


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage of a run: whether it is finished (from the files alone) and how to run it."""
  name: str
  done: Callable[[Job, ml_collections.ConfigDict], bool]
  run: Callable[[Job, ml_collections.ConfigDict], None]


def _trained(job: Job, config) -> bool:
  steps = committed_steps(job.workdir)
  return bool(steps) and (job.source is not None or steps[-1] >= config.steps)


def _train(job: Job, config) -> None:
  if job.source is not None:
    prune_run(job.source, job.workdir, config)
  else:
    train(config, job.workdir)


def _on_run(workdir: str, action: Callable) -> None:
  """`action(run)` on the run in `workdir` (its own config.json), closing it after."""
  run = open_run(load_config(workdir), workdir)
  try:
    action(run)
  finally:
    run.close()


def _stages(finetuned: bool) -> list[Stage]:
  """evaluate and adapt of the trained run, or of its fine-tuned run's best checkpoint."""
  where = (lambda job: job.finetuned) if finetuned else (lambda job: job.workdir)
  step = lambda job: _result_step(where(job))
  suffix = "_finetuned" if finetuned else ""
  return [
      Stage("evaluate" + suffix,
            lambda job, c: _written(where(job), "eval", c.data.eval_split, step(job)),
            lambda job, c: _on_run(where(job), lambda run: evaluate_and_write(run, step(job)))),
      Stage("adapt" + suffix,
            lambda job, c: _written(where(job), "adapt", c.adapt.train, step(job)),
            lambda job, c: _on_run(where(job), lambda run: adapt_and_write(run, step(job)))),
  ]


def _export(job: Job, config) -> None:
  export_run(job.finetuned, _result_step(job.finetuned), os.path.join(job.finetuned, "export"),
             load_config(job.finetuned), ExportOptions(), overwrite=True)


PIPELINE = [
    Stage("train", _trained, _train),
    *_stages(finetuned=False),
    Stage("finetune", lambda job, c: (committed_steps(job.finetuned) or [0])[-1] >= c.finetune.steps,
          lambda job, c: finetune(job.workdir)),
    *_stages(finetuned=True),
    Stage("export", lambda job, c: (as_path(job.finetuned) / "export" / "report.json").exists(), _export),
]
STAGES = tuple(s.name for s in PIPELINE)


# The adaptation stage of each network a sweep can adapt (config.adapt).
ADAPT_STAGES = {"trained": "adapt", "finetuned": "adapt_finetuned"}


def stages(job: Job, sweep) -> list[Stage]:
  """The stages `job` goes through: all, less the adaptations the sweep leaves out (`sweep.adapt`; every one for
  single-task runs, whose one task is seen) and the export when the sweep turns it off."""
  adapted = () if job.variant == "single_task" else sweep.adapt
  skipped = {stage for network, stage in ADAPT_STAGES.items() if network not in adapted}
  skipped |= {"export"} if not sweep.export else set()
  return [s for s in PIPELINE if s.name not in skipped]


def pending(job: Job, config, sweep) -> list[Stage]:
  """The stages of `job` still to run (a finished stage stays finished: its outputs are its record)."""
  return [s for s in stages(job, sweep) if not s.done(job, config)]


def record(job: Job, dataset: str) -> dict:
  path = as_path(job.workdir) / "sweep.json"
  if path.exists():
    return json.loads(path.read_text(encoding="utf-8"))
  return {"label": job.method, "method": job.variant, "target": job.target, "seed": job.seed, "dataset": dataset,
          "source": job.source, "seconds": {}}


def _save_record(job: Job, record: dict) -> None:
  as_path(job.workdir).mkdir(parents=True, exist_ok=True)
  write_text_atomic(as_path(job.workdir) / "sweep.json", json.dumps(record, indent=1))


class Estimator:
  """Seconds a stage is expected to take: the mean of what this sweep measured for the same stage and method
  (else the same stage), else `config.expected_seconds` (training and fine-tuning per step, plus start-up)."""

  def __init__(self, sweep: ml_collections.ConfigDict, measured: list[tuple[str, str, float]]):
    self.sweep = sweep
    self.measured = list(measured)

  def add(self, stage: str, variant: str, seconds: float) -> None:
    self.measured.append((stage, variant, seconds))

  def seconds(self, stage: str, job: Job, config) -> float:
    for match in (lambda s, v: s == stage and v == job.variant, lambda s, v: s == stage):
      values = [t for s, v, t in self.measured if match(s, v)]
      if values:
        return sum(values) / len(values)
    e = self.sweep.expected_seconds
    if stage == "train":
      return e.prune if job.source is not None else e.startup + config.steps * e.train_step
    if stage == "finetune":
      return e.startup + config.finetune.steps * e.finetune_step
    return e[stage.removesuffix("_finetuned")]


def duration(seconds: float) -> str:
  """"1 h 05 min", "12 min", "40 s"."""
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
  return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


class Sweep:
  """The runs of one slice of a sweep with their configs, the stages each still needs and the stage times so far.

  sweep: the sweep's config (experiments/configs/sweep.py); root: its directory; shard: (i, n), the i-th of n
  slices. Reading only: nothing is written before `run`."""

  def __init__(self, sweep: ml_collections.ConfigDict, root: str, shard: tuple[int, int] = (1, 1)):
    i, n = shard
    unknown = [network for network in sweep.adapt if network not in ADAPT_STAGES]
    if unknown:
      raise ConfigError(f"config.adapt={tuple(sweep.adapt)!r}: {unknown[0]!r} is not one of {tuple(ADAPT_STAGES)}")
    self.sweep, self.root, self.shard = sweep, root, shard
    self.jobs = [job for unit in plan(sweep, root)[i - 1::n] for job in unit]
    self.configs = {job: job_config(sweep, job) for job in self.jobs}
    self.todo = {job: pending(job, self.configs[job], sweep) for job in self.jobs}
    self.records = {job: record(job, sweep.dataset) for job in self.jobs}
    self.estimator = Estimator(sweep, [(stage, r["method"], seconds) for r in self.records.values()
                                       for stage, seconds in r["seconds"].items()])

  def eta(self, jobs: list[Job] | None = None) -> float:
    """Seconds the pending stages of `jobs` (default: all) are expected to take."""
    return sum(self.estimator.seconds(s.name, job, self.configs[job]) for job in (jobs or self.jobs)
               for s in self.todo[job])

  def plan_table(self) -> str:
    """Per method: seeds, stages done, stages to run, ETA; then the total."""
    s = self.sweep
    width = max([38, *(len(job.method) for job in self.jobs)])
    lines = [f"sweep of {s.dataset}{' (tiny)' if s.tiny else ''} in {self.root}: shard {self.shard[0]}/"
             f"{self.shard[1]}, {len(self.jobs)} runs", "",
             f"{'method':{width}s} {'seeds':8s} {'stages done':>12s} {'to run':>7s} {'ETA':>10s}"]
    for method in dict.fromkeys(job.method for job in self.jobs):
      mine = [job for job in self.jobs if job.method == method]
      left = sum(len(self.todo[job]) for job in mine)
      total = sum(len(stages(job, s)) for job in mine)
      seeds = ",".join(str(job.seed) for job in mine)
      lines.append(f"{method:{width}s} {seeds:8s} {total - left:>5d} of {total:<4d} {left:>7d} {duration(self.eta(mine)):>10s}")
    lines.append(f"\n{sum(len(t) for t in self.todo.values())} stages to run, ETA {duration(self.eta())} "
                 f"({len(self.estimator.measured)} stage times measured so far, the others from "
                 "config.expected_seconds)")
    return "\n".join(lines)

  def run(self) -> list[str]:
    """Runs every pending stage in order, recording its time in the run's sweep.json; returns the runs that failed
    (with the stage). A ConfigError (one line) ends only its run and the runs pruned from it; Preempted ends the
    process with status 128 + signal."""
    failed, broken = [], set()
    total, count = sum(len(t) for t in self.todo.values()), 0
    for job in self.jobs:
      if job.source in broken:
        failed.append(f"{job.method} seed {job.seed} (its dense run failed)")
        continue
      for stage in list(self.todo[job]):
        count += 1
        print(f"\n[{count}/{total}] {job.method} seed {job.seed}: {stage.name} (ETA of the sweep "
              f"{duration(self.eta())})", flush=True)
        start = time.monotonic()
        try:
          stage.run(job, self.configs[job])
        except Preempted as e:
          print(e, file=sys.stderr)
          sys.exit(128 + e.signum)
        except ConfigError as e:
          print(f"error: {job.method} seed {job.seed}, {stage.name}: {' '.join(str(e).split())}", file=sys.stderr)
          failed.append(f"{job.method} seed {job.seed} ({stage.name})")
          broken.add(job.workdir)
          break
        seconds = time.monotonic() - start
        self.todo[job].remove(stage)
        self.estimator.add(stage.name, job.variant, seconds)
        self.records[job]["seconds"][stage.name] = round(seconds, 1)
        _save_record(job, self.records[job])
    return failed
