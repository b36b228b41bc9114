r"""Paper-style tables and plots from finished runs: every method's seen and unseen tasks, Δm, size and speed.

python experiments/reports/tables.py --runs='runs/sweep/*/seed*' [--runs=...] [--baseline='runs/single/*/seed*'] --out=DIR
    [--split=test] [--adapt=heads] [--unseen_baseline=dense_mtl] [--metrics=delta_m|headline]
python experiments/reports/tables.py --out=DIR --report_only    # redraw DIR/front.png from DIR/results.json

Reads only the runs' files, never a checkpoint: config.json, metrics.jsonl, the results of evaluate.py
(eval/<split>_step<N>.json), adapt_unseen.py (adapt/<adapt>_step<N>.json) and export.py (export/report.json). A run
directory (what --runs matches) is a meta_train.py workdir; optionally it holds

  sweep.json    {"label": ..., "method": ..., "seed": ..., ...}; without it the label is config.json's variant,
                the method the variant's first part and the seed config.json's seed
  finetuned/    the fine-tuned run (a workdir of its own): the stage "after fine-tuning", read at the step named
                in finetuned/checkpoints_best/best.json, else at its highest evaluated step

Stages: "as trained" is the run's highest evaluated step N, with the adapt file and export report of that run at
step N when they exist; "after fine-tuning" the same files of finetuned/ at its step.

DIR gets table.md (with the commit and command that made it; with --baseline it ends with the front: the seen rows'
Δm and costs, sorted by stage and FLOPs kept), table.tex (booktabs), table.csv (every number, one
column per quantity and one for its std, the block "seen" or "unseen" in the first), results.json (every per-seed
value and the files read), front.png (Δm against FLOPs kept), channels.png (kept channels per layer, as trained) and
lambda.png (λ and alive channels per layer over training, first seed of each method that learns λ).

Seen tasks: one row per (label, stage) with mean ± std over seeds (std with ddof = 1) of each seen task's metrics
(--metrics: the metrics Δm compares, LibMTL's per-task sets, or each task's headline metric), Δm, the parameters of
the alive channels (evaluate.py's count, `CostModel.counts`, like the FLOPs; the exported network can hold more: it
keeps a zero slice where a residual channel dead in one conv lives on in another), the backbone FLOPs kept and the
group sparsity (fractions), and the exported network's latency at batch 1 (ms) where export.py reported one.
Δm (msp.tasks.delta_m, task_mean, LibMTL's metric sets) is computed per seed against the reference, then averaged;
the seen tasks' reference is the mean over seeds of the --baseline runs (single-task dense runs, one seen task each)
of each task. The unseen tasks (adapted heads) have no single-task reference: their Δm is against the mean adapted
results of the runs labelled --unseen_baseline (or, when no label is that, of the one label whose method is).
A reference stage follows the row's stage when every reference run has that stage, else it is "as trained" (the
caption says which was used).
"""
import collections
import csv
import dataclasses
import functools
import io
import json
import os
import re

import ml_collections
import numpy as np
from absl import flags

from experiments.run import script
from experiments.reports import plots
from experiments.run import provenance
from msp.cli import fail
from msp.models import build_model
from msp.sparsity import group_spec
from msp.tasks import build_tasks
from msp.tasks.delta_m import delta_m, result_parts
from msp.train import ConfigError
from msp.train.checkpoint import CheckpointError
from msp.train.evaluation import conventions
from msp.train.files import absolute, as_path, glob
from msp.train.writer import per_entry, read_jsonl
from experiments.run.training import best_step, load_config

STAGES = ("as trained", "after fine-tuning")
FINETUNED = "finetuned"
METRIC_CHOICES = ("delta_m", "headline")

Results = dict[str, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a run: the files read and what they hold.

  workdir: the run's directory or its finetuned/; step: the checkpoint step; seen: evaluate.py's results
  {task: {metric: value}}; sparsity: evaluate.py's sparsity summary (alive_channels (L,), flops_kept and
  group_sparsity_total fractions, params counts); unseen: adapt_unseen.py's unseen results or None; export: export.py's
  report or None; files: {"eval"/"adapt"/"export": path}."""
  workdir: str
  step: int
  seen: Results
  sparsity: dict
  unseen: Results | None
  export: dict | None
  files: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Run:
  """A run directory: its label, method and seed (sweep.json or config.json), config.json and stages by name."""
  workdir: str
  label: str
  method: str
  seed: int
  config: dict
  stages: dict[str, Stage]

  def results(self, stage: str, part: str) -> Results | None:
    """The `part` ("seen" / "unseen") results of `stage`; None where the run has no such stage or results."""
    return getattr(self.stages[stage], part) if stage in self.stages else None

  @property
  def dataset(self) -> str:
    """The data a run was trained and scored on, as one line (runs compared in one table must share it)."""
    data = self.config["data"]
    overrides = ", ".join(f"{k}={v}" for k, v in sorted((data.get("overrides") or {}).items()))
    return (f"{data['name']}/{data.get('config')}" + (f" ({overrides})" if overrides else "") +
            f" at {self.config['image_size']}²")


@dataclasses.dataclass(frozen=True)
class Column:
  """A table column: `key` names it in the CSV and results.json ("segmentation/miou", "delta_m", ...); `group` (a task
  name or "") and `name` head it; `higher_is_better` gives its arrow (None: none); `kind` "value" or "count" is how
  its cells are formatted."""
  key: str
  group: str
  name: str
  higher_is_better: bool | None = None
  kind: str = "value"


@dataclasses.dataclass
class Row:
  """One (label, stage) of a block: the runs (seeds) and, per column key, their values (None: not available)."""
  label: str
  stage: str
  runs: list[Run]
  values: dict[str, list[float] | None]


def _read_json(path: str) -> dict:
  try:
    return json.loads(as_path(path).read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path}: {e}") from e


def _steps(directory: str, prefix: str) -> dict[int, str]:
  """{N: path} of the files DIRECTORY/<prefix>_step<N>.json."""
  pattern = re.compile(re.escape(prefix) + r"_step(\d+)\.json")
  directory = as_path(directory)
  names = [entry.name for entry in directory.iterdir()] if directory.is_dir() else []
  return {int(m[1]): os.fspath(directory / name) for name in names if (m := pattern.fullmatch(name))}


def read_stage(workdir: str, step: int | None, split: str, adapt: str, config: dict) -> Stage:
  """The stage of the run in `workdir` at checkpoint `step` (None: its highest evaluated step); ConfigError naming
  the command to run when that step has no eval/<split>_step<step>.json."""
  evaluated = _steps(f"{workdir}/eval", split)
  if step is None and evaluated:
    step = max(evaluated)
  if step not in evaluated:
    flags_ = (f" --step={step}" if step is not None else "") + (
        f" --split={split}" if split != config["data"].get("eval_split") else "")
    raise ConfigError(f"{workdir} has no eval/{split}_step{step if step is not None else '<N>'}.json: run python "
                      f"experiments/evaluate.py --workdir={workdir}{flags_}")
  files = {"eval": evaluated[step]}
  payload = _read_json(files["eval"])
  unseen = None
  if step in (adapted := _steps(f"{workdir}/adapt", adapt)):
    files["adapt"] = adapted[step]
    unseen = result_parts(_read_json(files["adapt"]))["unseen"]
  export = None
  if as_path(path := f"{workdir}/export/report.json").exists():
    files["export"] = path
    export = _read_json(path)
  return Stage(workdir=workdir, step=step, seen=result_parts(payload)["seen"], sparsity=payload.get("sparsity", {}),
               unseen=unseen, export=export, files=files)


def read_run(workdir: str, split: str, adapt: str) -> Run:
  """A run directory (module docstring) with its stages; ConfigError for a directory that is not a run or lacks
  evaluation results."""
  try:
    config = load_config(workdir).to_dict()
  except CheckpointError as e:
    raise ConfigError(str(e)) from e
  sweep_path = f"{workdir}/sweep.json"
  sweep = _read_json(sweep_path) if as_path(sweep_path).exists() else {}
  label = sweep.get("label") or config.get("variant") or as_path(absolute(workdir)).parent.name
  method = sweep.get("method") or label.split(",")[0]
  stages = {STAGES[0]: read_stage(workdir, None, split, adapt, config)}
  finetuned = f"{workdir}/{FINETUNED}"
  if as_path(finetuned).is_dir():
    stages[STAGES[1]] = read_stage(finetuned, best_step(finetuned), split, adapt, config)
  return Run(workdir=workdir, label=label, method=method, seed=int(sweep.get("seed", config["seed"])), config=config,
             stages=stages)


def find_runs(patterns: list[str], flag: str, split: str, adapt: str) -> list[Run]:
  """The runs of the directories `patterns` match (sorted, each once); ConfigError for a pattern matching none."""
  directories = []
  for pattern in patterns:
    matched = sorted(p for p in glob(pattern) if as_path(p).is_dir())
    if not matched:
      raise ConfigError(f"--{flag}={pattern} matches no directory")
    directories += [d for d in matched if d not in directories]
  return [read_run(d, split, adapt) for d in directories]


def check_runs(runs: list[Run], baselines: list[Run]) -> tuple[str, ...]:
  """The seen tasks all `runs` share; ConfigError when runs of different data or tasks are mixed, a (label, seed)
  repeats, or the baselines are not one single-task run of a seen task per (task, seed) on the same data."""
  first = runs[0]
  for run in runs[1:] + baselines:
    if run.dataset != first.dataset:
      raise ConfigError(f"runs of different datasets are mixed: {first.workdir} ({first.dataset}) and {run.workdir} "
                        f"({run.dataset})")
  seen = tuple(first.config["seen_tasks"])
  for run in runs[1:]:
    if tuple(run.config["seen_tasks"]) != seen:
      raise ConfigError(f"runs of different tasks are mixed: {first.workdir} has seen tasks {list(seen)}, "
                        f"{run.workdir} {list(run.config['seen_tasks'])}")
  adapted = [(s.workdir, sorted(s.unseen)) for r in runs for s in r.stages.values() if s.unseen is not None]
  for workdir, tasks in adapted[1:]:
    if tasks != adapted[0][1]:
      raise ConfigError(f"runs of different tasks are mixed: {adapted[0][0]} was adapted to {adapted[0][1]}, "
                        f"{workdir} to {tasks}")
  seeds = collections.Counter((r.label, r.seed) for r in runs)
  if repeated := [key for key, n in seeds.items() if n > 1]:
    label, seed = repeated[0]
    raise ConfigError(f"label {label!r} has seed {seed} twice: " +
                      ", ".join(r.workdir for r in runs if (r.label, r.seed) == (label, seed)))
  for run in baselines:
    tasks = list(run.config["seen_tasks"])
    if len(tasks) != 1 or tasks[0] not in seen:
      raise ConfigError(f"--baseline run {run.workdir} has seen tasks {tasks}: a baseline is a single-task run of "
                        f"one of {list(seen)}")
  if baselines:
    if missing := [t for t in seen if not any(b.config["seen_tasks"][0] == t for b in baselines)]:
      raise ConfigError(f"no --baseline run was trained on {missing}: Δm needs a single-task run of every seen task")
    per_task = collections.Counter((b.config["seen_tasks"][0], b.seed) for b in baselines)
    if repeated := [key for key, n in per_task.items() if n > 1]:
      raise ConfigError(f"--baseline holds two runs of task {repeated[0][0]!r} with seed {repeated[0][1]}")
  return seen


def _mean_results(results: list[Results]) -> Results:
  """{task: {metric: mean over `results`}} of the metrics every one of them has."""
  return {task: {m: float(np.mean([r[task][m] for r in results])) for m in results[0][task]
                 if all(m in r.get(task, {}) for r in results)}
          for task in results[0] if all(task in r for r in results)}


def reference(runs: list[Run], stage: str, part: str) -> tuple[Results, str]:
  """({task: {metric: value}}, stage used): the mean over `runs` of their `part` ("seen" or "unseen") results at
  `stage` when every run has it, else as trained."""
  have = lambda s: all(r.results(s, part) is not None for r in runs)
  used = stage if have(stage) else STAGES[0]
  if not have(used):
    missing = next(r.stages[STAGES[0]] for r in runs if r.results(STAGES[0], part) is None)
    raise ConfigError(f"{missing.workdir}, a Δm reference run, has no adapted results at step {missing.step}: run "
                      f"python experiments/adapt_unseen.py --workdir={missing.workdir} --step={missing.step}")
  return _mean_results([r.results(used, part) for r in runs]), used


def seen_reference(baselines: list[Run], stage: str) -> tuple[Results, str]:
  """The seen tasks' Δm reference at `stage`: per task, `reference` of the baselines trained on it, merged."""
  merged, used = {}, set()
  for task in dict.fromkeys(b.config["seen_tasks"][0] for b in baselines):
    results, stage_used = reference([b for b in baselines if b.config["seen_tasks"][0] == task], stage, "seen")
    merged[task] = results[task]
    used.add(stage_used)
  return merged, " / ".join(s for s in STAGES if s in used)


def unseen_reference_runs(runs: list[Run], name: str, explicit: bool) -> list[Run]:
  """The runs labelled `name`, else those of the one label whose method is `name`; [] when none (ConfigError when
  `explicit`, i.e. given on the command line, or when several labels share that method)."""
  chosen = [r for r in runs if r.label == name]
  if not chosen:
    labels = list(dict.fromkeys(r.label for r in runs if r.method == name))
    if len(labels) > 1:
      raise ConfigError(f"--unseen_baseline={name}: labels {labels} all have method {name}; name one of them")
    chosen = [r for r in runs if r.method == name]
  if not chosen and explicit:
    raise ConfigError(f"--unseen_baseline={name}: no run among --runs has that label or method; labels: "
                      f"{sorted({r.label for r in runs})}")
  return chosen


def metric_columns(tasks, which: str) -> list[Column]:
  """A column per shown metric of `tasks` (msp Task objects): their Δm metrics or their headline metric."""
  return [Column(f"{t.name}/{m}", t.name, m, t.metric.higher_is_better[m])
          for t in tasks for m in (t.metric.delta_m_metrics if which == "delta_m" else (t.metric.headline,))]


DELTA_M = Column("delta_m", "", "Δm (%)", True)
COST_COLUMNS = (Column("params", "", "params", kind="count"), Column("flops_kept", "", "FLOPs kept"),
                Column("group_sparsity", "", "group sparsity"), Column("latency_ms", "", "latency (ms, batch 1)"))


def _all_or_none(values: list) -> list[float] | None:
  return None if any(v is None for v in values) else [float(v) for v in values]


def _latency(stage: Stage) -> float | None:
  return (stage.export or {}).get("pruned", {}).get("latency_ms", {}).get("1")


def build_rows(runs: list[Run], part: str, columns: list[Column], ref: dict[str, tuple[Results, str]] | None,
               left_out: set) -> list[Row]:
  """Rows of the `part` ("seen" / "unseen") block: per (label, stage), the runs with `part` results there and each
  column's per-seed values. Δm of each seed against `ref[stage]`'s results; metrics it leaves out go to `left_out`."""
  rows = []
  for label in dict.fromkeys(r.label for r in runs):
    for stage in STAGES:
      mine = sorted((r for r in runs if r.label == label and r.results(stage, part) is not None),
                    key=lambda r: r.seed)
      if not mine:
        continue
      stages = [r.stages[stage] for r in mine]
      values = {c.key: _all_or_none([getattr(s, part).get(c.group, {}).get(c.name) for s in stages])
                for c in columns if c.group}
      if ref is not None:
        try:
          deltas = [delta_m(getattr(s, part), ref[stage][0]) for s in stages]
        except ValueError as e:  # nothing comparable, or a percentage among fractions
          raise ConfigError(f"Δm of {label!r} ({stage}, {part} tasks): {e}") from e
        left_out.update((k, why) for d in deltas for k, why in d.left_out.items())
        values[DELTA_M.key] = [d.value for d in deltas]
      if part == "seen":
        values.update({"params": _all_or_none([s.sparsity.get("params") for s in stages]),
                       "flops_kept": _all_or_none([_flops_kept(r, s) for r, s in zip(mine, stages)]),
                       "group_sparsity": _all_or_none([s.sparsity.get("group_sparsity_total") for s in stages]),
                       "latency_ms": _all_or_none([_latency(s) for s in stages])})
      rows.append(Row(label, stage, mine, values))
  return rows


def _flops_kept(run: Run, stage: Stage) -> float | None:
  """The fraction of the full-width backbone's FLOPs a stage's network keeps: a thin network's own fraction
  (`model.flops_fraction`, thin_dense) times the fraction of it that is alive."""
  kept = stage.sparsity.get("flops_kept")
  return None if kept is None else kept * run.config["model"].get("flops_fraction", 1.0)


def _cell(values: list[float] | None, kind: str, separator: str) -> str:
  if values is None:
    return "–"
  if kind == "count":
    spread = f"{separator}{np.std(values, ddof=1):,.0f}" if len(values) > 1 else ""
    return f"{np.mean(values):,.0f}{spread}"
  return provenance.mean_std(values, separator)


def _arrow(column: Column, up: str, down: str) -> str:
  return "" if column.higher_is_better is None else " " + (up if column.higher_is_better else down)


def markdown_table(rows: list[Row], columns: list[Column]) -> str:
  """Markdown: method, stage, seeds, then a mean ± std cell per column (– where a value is missing)."""
  head = [f"{c.group} {c.name}".strip() + _arrow(c, "↑", "↓") for c in columns]
  lines = ["| method | stage | seeds | " + " | ".join(head) + " |", "|---|---|---|" + "---|" * len(columns)]
  lines += [f"| {r.label} | {r.stage} | {len(r.runs)} | " +
            " | ".join(_cell(r.values.get(c.key), c.kind, " ± ") for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def _tex(text: str) -> str:
  """`text` with LaTeX's special characters escaped and msp's symbols in math mode."""
  for plain, escaped in (("\\", r"\textbackslash{}"), ("--", "-{}-"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                         ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                         ("^", r"\^{}"), ("Δm", r"$\Delta_m$"), ("²", r"$^2$"), ("λ", r"$\lambda$"), ("±", r"$\pm$"),
                         ("–", "--")):
    text = text.replace(plain, escaped)
  return text


def latex_table(rows: list[Row], columns: list[Column], caption: str, label: str) -> str:
  """A booktabs table: task names spanning their metrics' columns, a \\midrule between methods."""
  spans = []  # (group, number of columns) in order
  for c in columns:
    if spans and spans[-1][0] == c.group and c.group:
      spans[-1] = (c.group, spans[-1][1] + 1)
    else:
      spans.append((c.group, 1))
  top, rules, start = [], [], 4
  for group, n in spans:
    top.append(rf"\multicolumn{{{n}}}{{c}}{{{_tex(group)}}}" if group else "")
    if group:
      rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
    start += n
  lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(caption)}}}", rf"\label{{{label}}}",
           r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{ll" + "r" * (1 + len(columns)) + "}", r"\toprule",
           " & & & " + " & ".join(top) + r" \\", " ".join(rules),
           "method & stage & seeds & " + " & ".join(_tex(c.name) + _arrow(c, r"$\uparrow$", r"$\downarrow$")
                                                    for c in columns) + r" \\", r"\midrule"]
  for i, r in enumerate(rows):
    if i and r.label != rows[i - 1].label:
      lines.append(r"\midrule")
    cells = [_tex(_cell(r.values.get(c.key), c.kind, " ± ")) for c in columns]
    lines.append(" & ".join([_tex(r.label), r.stage, str(len(r.runs)), *cells]) + r" \\")
  lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
  return "\n".join(lines)


def csv_rows(block: str, rows: list[Row], columns: list[Column]) -> list[dict]:
  """One dict per row: block, method, stage, seeds, and per column its mean and std (empty when missing; std empty
  for one seed)."""
  out = []
  for r in rows:
    record = {"block": block, "method": r.label, "stage": r.stage, "seeds": len(r.runs)}
    for c in columns:
      values = r.values.get(c.key)
      record[c.key] = "" if values is None else repr(float(np.mean(values)))
      record[f"{c.key} std"] = "" if values is None or len(values) < 2 else repr(float(np.std(values, ddof=1)))
    out.append(record)
  return out


def _layers(run: Run) -> tuple[list[str], np.ndarray, list[dict]]:
  """(layer names, (L,) channels per layer, metrics.jsonl records) of a run, from its metrics.jsonl (names from the
  alive_channels/<layer> keys; channels = alive / (1 − group sparsity), alive ≥ 1 by the channel floor)."""
  path = f"{run.workdir}/metrics.jsonl"
  if not as_path(path).exists():
    raise ConfigError(f"{path} does not exist: is {run.workdir!r} a meta_train.py run?")
  records = read_jsonl(path)
  first = next((r for r in records if any(k.startswith("alive_channels/") for k in r)), None)
  if first is None:
    raise ConfigError(f"{path} logs no alive_channels/<layer>")
  names = [k.split("/", 1)[1] for k in first if k.startswith("alive_channels/")]
  groups = np.array([round(first[f"alive_channels/{n}"] / (1 - first[f"group_sparsity/{n}"])) for n in names])
  return names, groups, records


@functools.cache
def _conv_layout(network: str) -> tuple[tuple[str, ...], np.ndarray, dict[str, int]]:
  """(sparsified convs in execution order, (C,) their channels, {conv: index of its layer among the run's sparsity
  layers}) of a run's network and groups, `network` the JSON of its config's model, tasks, seen_tasks, image_size
  sparsity and budget sections; from shapes alone. A tied layer (a FLOPs budget's residual stream) is the layer of
  each of its convs."""
  config = ml_collections.ConfigDict(json.loads(network))
  model = build_model(config.model, build_tasks(config.tasks, config.seen_tasks))
  layers = group_spec(config, model).layers
  channels = {conv: layer.num_groups for layer in layers for conv in layer.members}
  order = {f"backbone/{conv}": i for i, conv in enumerate(model.backbone.channel_sources()[0])}
  convs = tuple(sorted(channels, key=lambda conv: (order.get(conv, len(order)), conv)))
  layer_of = {conv: i for i, layer in enumerate(layers) for conv in layer.members}
  return convs, np.array([channels[c] for c in convs]), layer_of


def _layout_of(run: Run) -> tuple[tuple[str, ...], np.ndarray, dict[str, int]]:
  keys = ("model", "tasks", "seen_tasks", "image_size", "sparsity", "budget")
  return _conv_layout(json.dumps({k: run.config[k] for k in keys}, sort_keys=True))


def channel_series(runs: list[Run]) -> tuple[list[str], np.ndarray, list[dict]]:
  """(convs, channels per conv, one series per label: mean and std over seeds of the kept channels as trained).

  Per conv, so that runs whose groups differ compare: a tied layer's kept channels are each of its convs'."""
  convs, groups, _ = _layout_of(runs[0])
  series = []
  for label in dict.fromkeys(r.label for r in runs):
    alive = []
    for r in (r for r in runs if r.label == label):
      names, _, layer_of = _layout_of(r)
      kept = np.asarray(r.stages[STAGES[0]].sparsity["alive_channels"], np.float64)
      if names != convs or len(kept) != len(set(layer_of.values())):
        raise ConfigError(f"label {label!r}: the backbone convs or sparsity layers of {r.workdir} differ from those of "
                          f"{runs[0].workdir} ({len(kept)} layers in its eval files)")
      alive.append(kept[[layer_of[c] for c in convs]])
    alive = np.array(alive)
    series.append({"method": label, "mean": alive.mean(0),
                   "std": alive.std(0, ddof=1) if len(alive) > 1 else np.full(len(convs), np.nan)})
  return list(convs), groups, series


def lambda_panels(runs: list[Run]) -> list[dict]:
  """`plots.lambda_and_alive` panels: λ and alive channels over training of the first seed of each label whose
  config learns λ (sparsity enabled and learn_lambda)."""
  panels = []
  for label in dict.fromkeys(r.label for r in runs):
    run = min((r for r in runs if r.label == label), key=lambda r: r.seed)
    sparsity = run.config["sparsity"]
    if not (sparsity["enabled"] and sparsity["learn_lambda"]):
      continue
    layers, groups, records = _layers(run)
    records = [r for r in records if f"lambda/{layers[0]}" in r]
    panels.append({"title": f"{label} (seed {run.seed})", "steps": [r["step"] for r in records], "layers": layers,
                   "lambda": per_entry(records, "lambda", layers),
                   "alive": per_entry(records, "alive_channels", layers), "num_groups": groups})
  return panels


def _stage_note(used: dict[str, str], what: str) -> str:
  """Which stage of the reference each stage's rows were compared with: `used` {row stage: reference stage}."""
  return "; ".join(f"rows {stage}: against {what} {used[stage]}" for stage in used)


def report_blocks(runs: list[Run], baselines: list[Run], unseen_refs: list[Run], metrics: str, split: str) -> dict:
  """The report's blocks: {"seen": {"columns", "rows", "caption", "tasks"}, "unseen": the same or None when no run
  was adapted, "left_out": sorted ((task, metric), why) that some Δm left out}. ConfigError for runs that cannot be
  compared (`check_runs`)."""
  seen = check_runs(runs, baselines)
  tasks = build_tasks(runs[0].config["tasks"], seen)
  stages_present = [s for s in STAGES if any(s in r.stages for r in runs)]
  first = runs[0]
  where = (f"{first.dataset}, {split} split; mean ± std over seeds (std with ddof = 1); FLOPs kept and group "
           "sparsity are fractions of the backbone's FLOPs and channels; params count the weights of alive "
           "channels, as the FLOPs do")
  left_out = set()
  seen_ref = {s: seen_reference(baselines, s) for s in stages_present} if baselines else None
  columns = metric_columns(tasks, metrics) + ([DELTA_M] if seen_ref else []) + list(COST_COLUMNS)
  rows = build_rows(runs, "seen", columns, seen_ref, left_out)
  delta_note = ((f"Δm (%) of each seed against the mean over seeds of {len(baselines)} single-task runs "
                 "(--baseline); " + _stage_note({s: used for s, (_, used) in seen_ref.items()}, "them"))
                if seen_ref else "no --baseline: no Δm")
  blocks = {"seen": {"columns": columns, "rows": rows, "caption": f"Seen tasks. {where}. {delta_note}.",
                     "tasks": tasks}}

  adapted = [r for r in runs if any(s.unseen is not None for s in r.stages.values())]
  blocks["unseen"] = None
  if adapted:
    # every adapted stage has the same tasks (check_runs), in adapt_unseen.py's order
    names = next(s.unseen for s in adapted[0].stages.values() if s.unseen is not None)
    unseen_tasks = build_tasks(first.config["tasks"], list(names))
    adapted_stages = [s for s in STAGES if any(r.results(s, "unseen") is not None for r in adapted)]
    unseen_ref = ({s: reference(unseen_refs, s, "unseen") for s in adapted_stages} if unseen_refs else None)
    unseen_columns = metric_columns(unseen_tasks, metrics) + ([DELTA_M] if unseen_ref else [])
    note = ((f"Δm (%) of each seed against the mean adapted results of the runs labelled {unseen_refs[0].label!r} "
             f"({len(unseen_refs)} seeds; unseen tasks have no single-task reference); " +
             _stage_note({s: used for s, (_, used) in unseen_ref.items()}, "their results"))
            if unseen_ref else "no --unseen_baseline runs: no Δm")
    train = first.config.get("adapt", {})
    blocks["unseen"] = {"columns": unseen_columns, "rows": build_rows(runs, "unseen", unseen_columns, unseen_ref,
                                                                      left_out),
                        "caption": f"Unseen tasks, new heads fitted to the trained backbone (adapt_unseen.py, "
                                   f"{train.get('train')} for {train.get('steps')} steps). {first.dataset}, {split} "
                                   f"split; mean ± std over seeds (std with ddof = 1). {note}.",
                        "tasks": unseen_tasks}
  return {**blocks, "left_out": sorted(left_out)}


def _per_seed(rows: list[Row]) -> list[dict]:
  return [{"method": r.label, "stage": r.stage, "runs": [x.workdir for x in r.runs], "seeds": [x.seed for x in r.runs],
           "values": r.values} for r in rows]


def render(report: dict, runs: list[Run]) -> tuple[str, str, str, dict]:
  """(markdown, LaTeX, CSV text, results.json payload) of `report_blocks`."""
  left = "".join(f"\n- left out of Δm (relative change undefined): {task}:{metric} ({why})"
                 for (task, metric), why in report["left_out"])
  markdown, latex, records = [], [], []
  payload = {"left_out": [f"{t}:{m}: {why}" for (t, m), why in report["left_out"]]}
  for block in ("seen", "unseen"):
    b = report[block]
    if b is None:
      continue
    markdown.append(f"{b['caption']}\n\n{markdown_table(b['rows'], b['columns'])}\n\n{conventions(b['tasks'])}")
    latex.append(latex_table(b["rows"], b["columns"], b["caption"], f"tab:{block}"))
    records += csv_rows(block, b["rows"], b["columns"])
    payload[block] = {"caption": b["caption"], "columns": [dataclasses.asdict(c) for c in b["columns"]],
                      "rows": _per_seed(b["rows"])}
  payload["runs"] = [{"workdir": r.workdir, "label": r.label, "method": r.method, "seed": r.seed,
                      "stages": {name: {"step": s.step, "files": s.files} for name, s in r.stages.items()}}
                     for r in runs]
  fields = list(dict.fromkeys(k for record in records for k in record))
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
  writer.writeheader()
  writer.writerows(records)
  return "\n\n".join(markdown) + left, "\n\n".join(latex), buffer.getvalue(), payload


def front_table(rows: list[Row], columns: list[Column]) -> str:
  """Markdown of the front: the seen block's rows by stage, then by FLOPs kept (most first), with Δm and the cost
  columns only (what front.png draws, as numbers)."""
  keep = [c for c in columns if c in (DELTA_M, *COST_COLUMNS)]
  flops = lambda r: float(np.mean(r.values["flops_kept"])) if r.values.get("flops_kept") else 0.0
  ordered = sorted(rows, key=lambda r: (STAGES.index(r.stage), -flops(r)))
  return ("The front (seen tasks): Δm against the cost, by stage, most FLOPs kept first; the seen table's numbers."
          f"\n\n{markdown_table(ordered, keep)}")


def front_points(rows: list[Row]) -> list[dict]:
  """`plots.delta_m_front` points of the seen block's rows (mean, std over seeds; std NaN for one seed)."""
  return [_front_point(r.label, r.stage, r.values) for r in rows]


def _front_point(label: str, stage: str, values: dict[str, list[float]]) -> dict:
  stat = lambda v: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"))
  return {"method": label, "stage": stage, "flops_kept": stat(values["flops_kept"]),
          "delta_m": stat(values[DELTA_M.key])}


def redraw_front(out: str) -> str:
  """Redraws OUT/front.png from the per-seed Δm and FLOPs kept in OUT/results.json (a report whose runs are gone);
  returns its path. ConfigError when OUT has no results.json with Δm."""
  path = os.path.join(out, "results.json")
  try:
    with open(path, encoding="utf-8") as f:
      seen = json.load(f)["seen"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"--out={out}: no readable results.json of tables.py ({type(e).__name__}: {e})") from e
  rows = [r for r in seen["rows"] if DELTA_M.key in r["values"]]
  if not rows:
    raise ConfigError(f"{path} has no Δm (it was made without --baseline): there is no front to draw")
  dataset = re.match(r"Seen tasks\. (.*?), \w+ split", seen["caption"])
  front = os.path.join(out, "front.png")
  plots.delta_m_front([_front_point(r["method"], r["stage"], r["values"]) for r in rows],
                      [s for s in STAGES if any(r["stage"] == s for r in rows)], front,
                      f"{dataset.group(1) if dataset else 'results'}: seen tasks")
  return front


def command(runs: list[str], out: str, baseline: list[str] = (), split: str = "test", adapt: str = "heads",
            unseen_baseline: str = "dense_mtl", unseen_baseline_given: bool = False, metrics: str = "delta_m",
            started: dict[str, str] | None = None) -> tuple[str, list[str]]:
  """What the command line does (module docstring) from its flags' values (`unseen_baseline_given`: the flag was
  on the command line): checks everything, then writes OUT. Returns (the markdown tables, notes on what was not
  drawn). Raises ConfigError for bad input, before anything is written."""
  try:
    provenance.check_out(out)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  baselines = find_runs(list(baseline), "baseline", split, adapt)
  # a sweep's single-task references sit beside its other runs: matched by both globs, they are baselines only
  found = [run for run in find_runs(list(runs), "runs", split, adapt)
           if run.workdir not in {b.workdir for b in baselines}]
  if not found:
    raise ConfigError(f"--runs={list(runs)} matches only --baseline runs: there is nothing to compare with them")
  unseen_refs = unseen_reference_runs(found, unseen_baseline, unseen_baseline_given)
  report = report_blocks(found, baselines, unseen_refs, metrics, split)
  markdown, latex, table_csv, payload = render(report, found)
  seen_rows, has_delta_m = report["seen"]["rows"], DELTA_M in report["seen"]["columns"]
  if has_delta_m:
    markdown += "\n\n" + front_table(seen_rows, report["seen"]["columns"])
  layers, groups, series = channel_series(found)
  panels = lambda_panels(found)

  made_by = provenance.write_report(out, markdown, payload, started, name="table")
  with open(os.path.join(out, "table.tex"), "w", encoding="utf-8") as f:
    f.write(f"% {provenance.provenance_line(made_by)}\n% needs \\usepackage{{booktabs,graphicx}}\n{latex}\n")
  with open(os.path.join(out, "table.csv"), "w", encoding="utf-8") as f:
    f.write(table_csv)
  notes = []
  if has_delta_m:
    plots.delta_m_front(front_points(seen_rows), [s for s in STAGES if any(r.stage == s for r in seen_rows)],
                        os.path.join(out, "front.png"), f"{found[0].dataset}: seen tasks")
  else:
    notes.append("no front.png: without --baseline there is no Δm")
  plots.kept_channels(layers, groups, series, os.path.join(out, "channels.png"), "kept channels per layer, as trained")
  if panels:
    plots.lambda_and_alive(panels, os.path.join(out, "lambda.png"), "λ and alive channels per layer over training")
  else:
    notes.append("no lambda.png: no method learns λ")
  return markdown, notes


def define_flags() -> None:
  """The command line's flags (module docstring); defined only when run, since the tests import this module."""
  flags.DEFINE_multi_string("runs", None, "Glob of run directories (quote it); repeat the flag for several.")
  flags.DEFINE_multi_string("baseline", [], "Glob of single-task dense runs, the seen tasks' Δm reference (one seen "
                            "task each); repeat the flag for several.")
  flags.DEFINE_string("out", None, "Folder for the tables and plots (created; its files are replaced).")
  flags.DEFINE_string("split", "test", "The evaluate.py split to read (eval/<split>_step<N>.json).")
  flags.DEFINE_string("adapt", "heads", "The adapt_unseen.py files to read (adapt/<adapt>_step<N>.json): "
                      "config.adapt.train of the adaptation.")
  flags.DEFINE_string("unseen_baseline", "dense_mtl", "Label (or method) of the runs whose adapted results are the "
                      "unseen tasks' Δm reference.")
  flags.DEFINE_enum("metrics", "delta_m", METRIC_CHOICES, "Metric columns: delta_m, the metrics Δm compares "
                    "(LibMTL's per-task sets); headline, one per task.")
  flags.DEFINE_bool("report_only", False, "Only redraw OUT/front.png from OUT/results.json (the runs are not read).")
  flags.mark_flags_as_required(["out"])


def main(argv):
  script.start(argv)
  started = provenance.provenance()
  f = flags.FLAGS
  if f.report_only:
    with script.clear_errors():
      print(f"redrawn {redraw_front(f.out)}")
    return
  if not f.runs:
    fail("--runs is required (or --report_only to redraw OUT/front.png)")
  with script.clear_errors():
    markdown, notes = command(f.runs, f.out, f.baseline, f.split, f.adapt, f.unseen_baseline,
                              f["unseen_baseline"].present, f.metrics, started)
  print(markdown)
  print("\n".join(notes + [f"written to {f.out}: " + ", ".join(sorted(os.listdir(f.out)))]))


if __name__ == "__main__":
  define_flags()
  script.run(main)
