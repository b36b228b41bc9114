"""The evaluation protocol: what a score of a run means.

Seen tasks are evaluated the way the meta-objective trains them (MAML-style initialisations can be poor predictors
on their own: the outer loss only ever sees them after K inner steps), in three steps, `protocol_variables`:
  1. adapt: the run's K inner steps on one support batch of `eval.support_size` training examples with every seen
     task present (the same batch for every checkpoint, variant and seed of a config); `joint` runs have no inner
     loop and skip this;
  2. recalibrate: BatchNorm's running averages are replaced by the statistics of `eval.calibration_size` training
     examples under the weights being evaluated. The averages kept during meta-training belong to other weights
     (each episode's adapted ones, tens of outer steps ago, before channels were pruned); inference on them
     scored the quickstart's attribute tasks at chance level although they had trained (docs/evaluation.md,
     "Why recalibrate");
  3. infer: a forward pass in inference mode over the evaluation split, pooling each task's metric.
Unseen tasks (`msp.train.adaptation`) get new heads on a recalibrated backbone. `describe_protocol` says all this
in one line for reports.
"""
import functools
import json
import os
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from flax import traverse_util

from msp.meta import MetaBatch, lambdas_from_log
from msp.parallel import is_primary, local, sum_over_processes
from msp.sparsity import sparsity_stats
from msp.tasks import Task
from msp.train.files import as_path, write_text_atomic, writing
from msp.train.setup import MetaLearner
from msp.train.state import MetaTrainState

Results = dict[str, dict[str, float]]


def adapted_variables(learner: MetaLearner, state: MetaTrainState, support: dict) -> dict:
  """The variables after the run's inner loop on `support` with every seen task: {"params", "batch_stats"}."""
  episode = MetaBatch(support=support, query=support, task_mask=jnp.ones(len(learner.tasks)))
  params, batch_stats = learner.objective.adapt(state.params, state.log_lambdas, state.batch_stats, episode)
  return {"params": params, "batch_stats": batch_stats}


def recalibrated_batch_stats(apply_fn: Callable, variables: dict, images: jax.Array) -> dict:
  """BatchNorm running averages replaced by the batch statistics of `images` (N, H, W, 3) under `variables`.

  Use after adaptation or pruning, when the averages gathered in training no longer match the weights. Every
  BatchNorm updates r ← m·r + (1 − m)·s with its batch statistic s (mean or biased variance): a train-mode pass from
  r = 0 gives a = (1 − m)·s, and a second one from r = a gives b = m·a + (1 − m)·s = (1 + m)·a, so m = b/a − 1 and
  s = a / (1 − m), whatever each layer's momentum m (s = 0 where a = 0). Ratios keep full precision at any scale of
  s; the earlier a / (1 − b + a) from r = 1 cancelled catastrophically for large statistics (non-finite averages
  on a teacher–student network whose features reached ~1e6). apply_fn(variables, images, train=True,
  mutable=[...]) is the model's apply. Returns a new batch_stats tree; with it, `train=False` on `images`
  reproduces `train=True` on `images`.
  """
  def averages_from(start):
    _, updates = apply_fn({**variables, "batch_stats": start}, images, train=True, mutable=["batch_stats"])
    return updates["batch_stats"]

  from_zero = averages_from(jax.tree.map(jnp.zeros_like, variables["batch_stats"]))
  from_a = averages_from(from_zero)

  def statistic(a, b):
    nonzero = a != 0
    safe_a = jnp.where(nonzero, a, 1.0)
    return jnp.where(nonzero, safe_a / (2.0 - b / safe_a), 0.0)  # a / (1 − m) with m = b/a − 1

  return jax.tree.map(statistic, from_zero, from_a)


def calibrated_batch_stats(apply_fn: Callable, variables: dict, images, batch_size: int) -> dict:
  """BatchNorm averages from `images` (N, H, W, 3) taken `batch_size` at a time: every chunk's exact batch
  statistics (`recalibrated_batch_stats`), pooled over the chunks weighted by their sizes — the mean of the means,
  and the mean of (variance + mean²) minus the pooled mean² for the variances. With N ≤ batch_size this is exactly
  `recalibrated_batch_stats`; with several chunks each chunk is normalised by its own statistics on the way, as in
  training. Returns a new batch_stats tree."""
  recalibrate = functools.partial(recalibrated_batch_stats, apply_fn)
  chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
  if len(chunks) == 1:
    return recalibrate(variables, jnp.asarray(images))
  weights = [len(chunk) / len(images) for chunk in chunks]
  stats = [traverse_util.flatten_dict(recalibrate(variables, jnp.asarray(chunk))) for chunk in chunks]
  mean_of = lambda values: sum(w * v for w, v in zip(weights, values))
  pooled = {key: mean_of([s[key] for s in stats]) for key in stats[0]}
  for key in stats[0]:
    if key[-1] == "var":
      mean_key = (*key[:-1], "mean")
      pooled[key] = mean_of([s[key] + s[mean_key] ** 2 for s in stats]) - pooled[mean_key] ** 2
  return traverse_util.unflatten_dict(pooled)


def calibrated(apply_fn: Callable, variables: dict, calibration_images, batch_size: int) -> dict:
  """`variables` with BatchNorm's averages recalibrated on `calibration_images` (N, H, W, 3), `batch_size` at a
  time (`calibrated_batch_stats`); unchanged when `calibration_images` is None (keep training's averages)."""
  if calibration_images is None:
    return variables
  return {**variables, "batch_stats": calibrated_batch_stats(apply_fn, variables, calibration_images, batch_size)}


def protocol_variables(learner: MetaLearner, state: MetaTrainState, support: dict, calibration_images,
                       batch_size: int) -> dict:
  """The seen-task protocol (module docstring) up to inference: {"params", "batch_stats"} after the run's inner
  loop on `support` ("image" (B, H, W, 3) + every seen task's target) with every seen task, `calibrated` on
  `calibration_images` (N, H, W, 3) `batch_size` at a time (None: the state's averages)."""
  return calibrated(learner.model.apply, adapted_variables(learner, state, support), calibration_images, batch_size)


def describe_protocol(config) -> str:
  """One line naming the seen-task evaluation protocol of `config` (for reports and printed tables)."""
  e, m = config.eval, config.meta
  adapt = ("no inner loop (joint training)" if m.mode == "joint" else
           f"{m.inner_steps} inner step(s) at lr {m.inner_lr:g} on {e.support_size} training examples with every "
           f"seen task")
  calibrate = (f"BatchNorm recalibrated on {e.calibration_size} training examples" if e.calibration_size else
               "BatchNorm on the running averages kept in training")
  return f"protocol: {adapt}; {calibrate}; then inference"


def evaluate(apply_fn: Callable, variables: dict, tasks: Sequence[Task], batches: Iterable,
             num_batches: int | None = None, progress: bool = True) -> Results:
  """Pools each task's metric over `batches` (padding rows excluded) → {task: {metric name: value}}.

  apply_fn(variables, images (B, H, W, 3), train=False) → {task: raw output}; each EvalBatch holds the images and
  every task's target. In a multi-process job `batches` are this process's shard of the split
  (`data_pipelines.episodes.eval_dataset`), every process calls this, and each gets the metrics of the whole split:
  the metric states are summed over processes (`msp.parallel.sum_over_processes`).
  """
  forward = jax.jit(lambda v, x: apply_fn(v, x, train=False))
  updates = {t.name: jax.jit(t.metric.update) for t in tasks}
  states = {t.name: t.metric.init() for t in tasks}
  variables = local(variables)
  for batch in tqdm.tqdm(batches, total=num_batches, desc="evaluate", disable=not (progress and is_primary()),
                         dynamic_ncols=True):
    outputs = forward(variables, batch.examples["image"])
    rows = int(np.sum(batch.valid))  # padding rows come last
    for t in tasks:
      output, target = outputs[t.name], batch.examples[t.name]
      if rows < len(batch.valid):
        output, target = output[:rows], target[:rows]
      states[t.name] = updates[t.name](states[t.name], output, target)
  states = sum_over_processes(states)
  return {t.name: t.metric.compute(states[t.name]) for t in tasks}


def shown_metrics(tasks: Sequence[Task]) -> list[tuple[str, str, bool]]:
  """(task name, metric name, higher is better) of every metric a results table shows for `tasks`, in order;
  per-entry metrics (`accuracy/3`) stay in the JSON only."""
  return [(task.name, metric, better) for task in tasks for metric, better in task.metric.higher_is_better.items()
          if "/" not in metric]


def conventions(tasks: Sequence[Task]) -> str:
  """The metric conventions of `tasks`, one markdown bullet per distinct convention (printed under tables)."""
  return "\n".join(f"- {c}" for c in dict.fromkeys(task.metric.convention for task in tasks))


def results_table(columns: dict[str, Results], tasks: Sequence[Task]) -> str:
  """Markdown table: a row per (task, metric) that some column has, a column per named Results; ↑/↓ marks the
  direction in which the metric is better; the tasks' metric conventions follow as bullets."""
  lines = ["| task | metric | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
  for task, metric, better in shown_metrics(tasks):
    values = [col.get(task, {}).get(metric) for col in columns.values()]
    if all(v is None for v in values):
      continue
    lines.append(f"| {task} | {metric} {'↑' if better else '↓'} | " + " | ".join(map(_format, values)) + " |")
  return "\n".join(lines) + "\n\n" + conventions(tasks)


def sparsity_summary(learner: MetaLearner, state: MetaTrainState) -> dict:
  """λ per layer, alive channels, group / parameter sparsity and FLOPs kept of a state, the parameter count of the
  network with its dead channels removed (`params`, seen tasks' heads included; `CostModel.counts`) and of the dense
  one (`params_dense`), plus a markdown table of the per-layer values (key `table`); numbers as JSON-able lists,
  floats and ints."""
  spec = learner.spec
  lambdas = np.asarray(lambdas_from_log(state.log_lambdas, spec.num_layers))
  stats = {k: np.asarray(v).tolist() for k, v in sparsity_stats(state.params, spec).items()}
  rows = ["| layer | λ | alive channels |", "|---|---|---|"] + [
      f"| {layer.name} | {lam:.3g} | {alive} / {layer.num_groups} |"
      for layer, lam, alive in zip(spec.layers, lambdas, stats["alive_channels"])]
  params = lambda counts: int(round(sum(c.params for c in counts.values())))
  return {"lambda": lambdas.tolist(), **stats, "flops_kept": float(learner.cost_model.flops_kept(state.params)),
          "params": params(learner.cost_model.counts(state.params)), "params_dense": params(learner.cost_model.counts()),
          "table": "\n".join(rows)}


def _format(value) -> str:
  if value is None:
    return "–"
  return f"{value:.4g}"


def write_results(directory: str, name: str, payload: dict, table: str) -> tuple[str, str]:
  """Writes `<name>.json` (payload) and `<name>.md` (table) into `directory`, each whole or not at all; returns both
  paths. WriteError (naming the file and the reason) when that fails."""
  directory = as_path(directory)
  json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
  if is_primary():  # process 0 writes the job's files
    with writing(directory):
      directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json_path, json.dumps(payload, indent=1, default=float))
    write_text_atomic(md_path, table + "\n")
  return os.fspath(json_path), os.fspath(md_path)
