"""Adaptation to unseen tasks (`msp.train.adaptation`) for a run in a workdir, on its own data splits."""
import os
from typing import Sequence

import numpy as np

from data_pipelines.datasets import Prefix
from data_pipelines.episodes import batch_sampler
from experiments.run.scoring import calibration_images, eval_batches, evaluate_seen
from msp.parallel import local
from msp.train.adaptation import attach_heads, fine_tune
from msp.train.evaluation import calibrated, evaluate, results_table, write_results


def training_subset(source, fraction: float):
  """The first ⌈fraction·N⌉ examples of a random-access source (at least 1): the fine-tuning data."""
  if not 0 < fraction <= 1:
    raise ValueError(f"config.adapt.train_fraction={fraction} must lie in (0, 1]")
  return Prefix(source, max(1, int(np.ceil(fraction * len(source)))))


def adapt_unseen(run, state, tasks: Sequence[str] | None = None, with_seen: bool = True,
                 progress: bool = True) -> dict:
  """Fine-tunes heads for `tasks` (default `config.adapt.tasks`, else `config.unseen_tasks`) on the meta-trained
  state of `run` (a `experiments.run.training.Run`) and evaluates them, and the seen tasks, on the evaluation split.

  Returns {"unseen": Results, "seen": Results (None unless `with_seen`), "losses": fine-tuning losses per step,
  "variables": the adapted {"params", "batch_stats"} of the model with every head, "tasks": the new Tasks}.
  """
  c = run.config
  state = local(state)  # every process fine-tunes the same heads on the same batches, alone
  tasks = tuple(tasks or c.adapt.tasks or c.unseen_tasks)
  model, new_tasks, variables = attach_heads(c.model, c.tasks, run.learner.tasks, tasks,
                                             {"params": state.params, "batch_stats": state.batch_stats},
                                             c.image_size, c.seed)
  targets = run.dataset.targets(c.tasks, tasks)
  source = training_subset(run.dataset.source(c.data.train_split), c.adapt.train_fraction)
  calibration = calibration_images(run)
  variables, losses = fine_tune(model, calibrated(model.apply, variables, calibration, c.eval.batch_size), new_tasks,
                                run.learner.spec, batch_sampler(source, targets, c.adapt.batch_size, c.seed),
                                train=c.adapt.train, steps=c.adapt.steps, lr=c.adapt.lr, progress=progress)
  if c.adapt.train == "heads_and_backbone":
    variables = calibrated(model.apply, variables, calibration, c.eval.batch_size)
  batches, num_batches = eval_batches(run.dataset.source(c.data.eval_split), targets, c)
  unseen = evaluate(model.apply, variables, new_tasks, batches, num_batches, progress)
  seen = None
  if with_seen:
    seen_params = {k: v for k, v in variables["params"].items() if k in state.params}
    seen = evaluate_seen(run, state.replace(params=seen_params, batch_stats=variables["batch_stats"]),
                         progress=progress)
  return {"unseen": unseen, "seen": seen, "losses": losses, "variables": variables, "tasks": new_tasks}


def adapt_and_write(run, step: int | None = None, progress: bool = True) -> tuple[dict, list[str], str]:
  """`adapt_unseen` on checkpoint `step` (None: the latest) of `run`, written to
  WORKDIR/adapt/<adapt.train>_step<N>.{json,md}. Returns (what the json holds: step, train, unseen and seen results,
  final_loss; the paths written; the markdown table)."""
  step, state = run.trained_state(step)
  out = adapt_unseen(run, state, progress=progress)
  table = results_table({"unseen (adapted)": out["unseen"]}, out["tasks"]) + "\n\n" + results_table(
      {"seen": out["seen"]}, run.learner.tasks)
  train = run.config.adapt.train
  record = {"step": step, "train": train, "unseen": out["unseen"], "seen": out["seen"],
            "final_loss": out["losses"][-1] if out["losses"] else None}
  return record, write_results(os.path.join(run.workdir, "adapt"), f"{train}_step{step}", record, table), table
