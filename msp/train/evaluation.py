"""Evaluation after adaptation: the meta-learned initialisation is meant to be adapted before it is used.

MAML-style initialisations can be poor predictors on their own (the outer loss only ever sees them after K inner
steps), so seen tasks are evaluated the way the meta-objective trains them: K inner steps on one support batch of
the training split with every seen task present (the same batch for every checkpoint and variant), then a forward
pass in inference mode (BatchNorm on running averages) over the evaluation split, accumulating each task's metric.
Runs without an inner loop (`joint` mode) are evaluated as they are.
"""
import json
import math
import os
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from data_pipelines.datasets import Prefix
from data_pipelines.episodes import EvalBatch, batch_sampler, eval_dataset
from msp.meta import MetaBatch, lambdas_from_rho
from msp.sparsity import sparsity_stats
from msp.tasks import Task
from msp.train.setup import MetaLearner
from msp.train.state import MetaTrainState

Results = dict[str, dict[str, float]]
# The evaluation's support batch is drawn with this offset on the run's seed, apart from the meta-batches.
SUPPORT_SEED_OFFSET = 10_000


def adapted_outputs(learner: MetaLearner, state: MetaTrainState, support: dict, images) -> dict:
  """support: "image" (B, H, W, 3) + every seen task's target; images (N, H, W, 3) → {task: raw output (N, ...)}."""
  return learner.model.apply(adapted_variables(learner, state, support), images, train=False)


def adapted_variables(learner: MetaLearner, state: MetaTrainState, support: dict) -> dict:
  """The variables after the run's inner loop on `support` with every seen task: {"params", "batch_stats"}."""
  episode = MetaBatch(support=support, query=support, task_mask=jnp.ones(len(learner.tasks)))
  params, batch_stats = learner.objective.adapt(state.params, state.log_lambdas, state.batch_stats, episode)
  return {"params": params, "batch_stats": batch_stats}


def recalibrated_batch_stats(apply_fn: Callable, variables: dict, images: jax.Array) -> dict:
  """BatchNorm running averages replaced by the batch statistics of `images` (N, H, W, 3) under `variables`.

  Use after adaptation or pruning, when the averages gathered in training no longer match the weights. Every
  BatchNorm updates r ← m·r + (1 − m)·s with its batch statistic s (mean or biased variance): a train-mode pass
  from r = 0 gives a = (1 − m)·s and one from r = 1 gives b = m + (1 − m)·s, so s = a / (1 − b + a) exactly,
  whatever each layer's momentum m. apply_fn(variables, images, train=True, mutable=[...]) is the model's apply.
  Returns a new batch_stats tree; with it, `train=False` on `images` reproduces `train=True` on `images`.
  """
  def averages_from(value: float):
    start = jax.tree.map(lambda x: jnp.full_like(x, value), variables["batch_stats"])
    _, updates = apply_fn({**variables, "batch_stats": start}, images, train=True, mutable=["batch_stats"])
    return updates["batch_stats"]

  from_zero, from_one = averages_from(0.0), averages_from(1.0)
  return jax.tree.map(lambda a, b: a / (1.0 - b + a), from_zero, from_one)


def support_batch(source, targets, size: int, seed: int) -> dict[str, np.ndarray]:
  """`size` examples of `source` (the training split) with every task's target, fixed by `seed`."""
  return batch_sampler(source, targets, size, seed + SUPPORT_SEED_OFFSET)(0)


def evaluate(apply_fn: Callable, variables: dict, tasks: Sequence[Task], batches: Iterable[EvalBatch],
             num_batches: int | None = None, progress: bool = True) -> Results:
  """Pools each task's metric over `batches` (padding rows excluded) → {task: {metric name: value}}.

  apply_fn(variables, images (B, H, W, 3), train=False) → {task: raw output}; each EvalBatch holds the images and
  every task's target.
  """
  forward = jax.jit(lambda v, x: apply_fn(v, x, train=False))
  updates = {t.name: jax.jit(t.metric.update) for t in tasks}
  states = {t.name: t.metric.init() for t in tasks}
  for batch in tqdm.tqdm(batches, total=num_batches, desc="evaluate", disable=not progress, dynamic_ncols=True):
    outputs = forward(variables, batch.examples["image"])
    rows = int(np.sum(batch.valid))  # padding rows come last
    for t in tasks:
      output, target = outputs[t.name], batch.examples[t.name]
      if rows < len(batch.valid):
        output, target = output[:rows], target[:rows]
      states[t.name] = updates[t.name](states[t.name], output, target)
  return {t.name: t.metric.compute(states[t.name]) for t in tasks}


def eval_batches(source, targets, config) -> tuple[Any, int]:
  """(EvalBatch iterator over `source`, number of batches) with `config.eval`'s batch size and example cap."""
  if config.eval.max_examples is not None:
    source = Prefix(source, config.eval.max_examples)
  size = config.eval.batch_size
  return iter(eval_dataset(source, targets, size, num_threads=config.data.num_threads,
                           prefetch_buffer_size=config.data.prefetch)), math.ceil(len(source) / size)


def results_table(columns: dict[str, Results], tasks: Sequence[Task]) -> str:
  """Markdown table: a row per (task, metric) that some column has, a column per named Results; ↑/↓ marks the
  direction in which the metric is better. Per-entry metrics (`accuracy/3`) stay in the JSON only."""
  lines = ["| task | metric | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
  for task in tasks:
    for metric, better in task.metric.higher_is_better.items():
      if "/" in metric:
        continue
      values = [col.get(task.name, {}).get(metric) for col in columns.values()]
      if all(v is None for v in values):
        continue
      lines.append(f"| {task.name} | {metric} {'↑' if better else '↓'} | " + " | ".join(map(_format, values)) + " |")
  return "\n".join(lines)


def sparsity_summary(learner: MetaLearner, state: MetaTrainState) -> dict:
  """λ per layer, alive channels, group / parameter sparsity and FLOPs kept of a state, plus a markdown table of
  the per-layer values (key `table`); numbers as JSON-able lists and floats."""
  spec = learner.spec
  lambdas = np.asarray(lambdas_from_rho(state.log_lambdas, spec.num_layers))
  stats = {k: np.asarray(v).tolist() for k, v in sparsity_stats(state.params, spec).items()}
  rows = ["| layer | λ | alive channels |", "|---|---|---|"] + [
      f"| {layer.name} | {lam:.3g} | {alive} / {layer.num_groups} |"
      for layer, lam, alive in zip(spec.layers, lambdas, stats["alive_channels"])]
  return {"lambda": lambdas.tolist(), **stats, "flops_kept": float(learner.cost_model.flops_kept(state.params)),
          "table": "\n".join(rows)}


def _format(value) -> str:
  if value is None:
    return "–"
  return f"{value:.4g}"


def write_results(directory: str, name: str, payload: dict, table: str) -> tuple[str, str]:
  """Writes `<name>.json` (payload) and `<name>.md` (table) into `directory`; returns both paths."""
  os.makedirs(directory, exist_ok=True)
  json_path, md_path = os.path.join(directory, f"{name}.json"), os.path.join(directory, f"{name}.md")
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=1, default=float)
  with open(md_path, "w", encoding="utf-8") as f:
    f.write(table + "\n")
  return json_path, md_path


def adapted_to_seen_tasks(run, state: MetaTrainState) -> dict:
  """The variables of `run` (a `msp.train.run.Run`) after its inner loop on the fixed support batch of the seen
  tasks (what `evaluate_seen` scores): {"params", "batch_stats"}."""
  c = run.config
  targets = run.dataset.targets(c.tasks, c.seen_tasks)
  support = support_batch(run.dataset.source(c.data.train_split), targets, c.meta.support_size, c.seed)
  return adapted_variables(run.learner, state, support)


def evaluate_seen(run, state: MetaTrainState, split: str | None = None, progress: bool = True) -> Results:
  """The seen tasks of `run` (a `msp.train.run.Run`) after adaptation, on `split` (default config.data.eval_split)."""
  c = run.config
  variables = adapted_to_seen_tasks(run, state)
  targets = run.dataset.targets(c.tasks, c.seen_tasks)
  batches, num_batches = eval_batches(run.dataset.source(split or c.data.eval_split), targets, c)
  return evaluate(run.learner.model.apply, variables, run.learner.tasks, batches, num_batches, progress)
