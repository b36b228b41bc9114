"""The evaluation protocol (`msp.train.evaluation`) applied to a run in a workdir: its fixed support batch and
calibration images drawn from the run's training split, and its evaluation split in batches."""
import os
from typing import Any

import numpy as np
from absl import logging

from data_pipelines.datasets import Prefix, open_dataset
from data_pipelines.episodes import batch_sampler, eval_dataset, eval_num_batches
from msp.parallel import local
from msp.train.config import ConfigError
from msp.train.evaluation import (Results, describe_protocol, evaluate, protocol_variables, results_table,
                                  sparsity_summary, write_results)
from msp.train.state import MetaTrainState

# The evaluation's support batch is drawn with this offset on the run's seed, apart from the meta-batches.
SUPPORT_SEED_OFFSET = 10_000
# ... and the calibration examples with this one.
CALIBRATION_SEED_OFFSET = 20_000


def support_batch(source, targets, size: int, seed: int) -> dict[str, np.ndarray]:
  """`size` examples of `source` (the training split) with every task's target, fixed by `seed`."""
  return batch_sampler(source, targets, size, seed + SUPPORT_SEED_OFFSET)(0)


def calibration_images(run) -> np.ndarray | None:
  """(eval.calibration_size, H, W, 3) training images of `run` (a `experiments.run.training.Run`), fixed by its seed; None
  when eval.calibration_size is 0 (keep the running averages)."""
  c = run.config
  if not c.eval.calibration_size:
    return None
  source = run.dataset.source(c.data.train_split)
  return batch_sampler(source, {}, min(c.eval.calibration_size, len(source)), c.seed + CALIBRATION_SEED_OFFSET)(0)["image"]


def eval_batches(source, targets, config) -> tuple[Any, int]:
  """(EvalBatch iterator over this process's shard of `source`, its number of batches) with `config.eval`'s batch
  size and example cap."""
  if config.eval.max_examples is not None:
    source = Prefix(source, config.eval.max_examples)
  size = config.eval.batch_size
  return iter(eval_dataset(source, targets, size, num_threads=config.data.num_threads,
                           prefetch_buffer_size=config.data.prefetch)), eval_num_batches(len(source), size)


def adapted_to_seen_tasks(run, state: MetaTrainState) -> dict:
  """The variables `evaluate_seen` scores for `run` (a `experiments.run.training.Run`): `protocol_variables` on its fixed
  support batch and calibration images → {"params", "batch_stats"}."""
  c = run.config
  targets = run.dataset.targets(c.tasks, c.seen_tasks)
  source = run.dataset.source(c.data.train_split)
  support = support_batch(source, targets, min(c.eval.support_size, len(source)), c.seed)
  return protocol_variables(run.learner, state, support, calibration_images(run), c.eval.batch_size)


def evaluate_seen(run, state: MetaTrainState, split: str | None = None, progress: bool = True) -> Results:
  """The seen tasks of `run` (a `experiments.run.training.Run`) scored by the protocol (module docstring) on `split` (default
  config.data.eval_split)."""
  c = run.config
  variables = adapted_to_seen_tasks(run, local(state))  # each process adapts alone, then scores its shard
  targets = run.dataset.targets(c.tasks, c.seen_tasks)
  batches, num_batches = eval_batches(run.dataset.source(split or c.data.eval_split), targets, c)
  return evaluate(run.learner.model.apply, variables, run.learner.tasks, batches, num_batches, progress)


def evaluate_and_write(run, step: int | None = None, split: str | None = None, progress: bool = True
                       ) -> tuple[dict, list[str], str]:
  """Scores checkpoint `step` (None: the latest) of `run` (a `experiments.run.training.Run`) with `evaluate_seen` on `split`
  (default config.data.eval_split) and writes WORKDIR/eval/<split>_step<N>.{json,md}. Returns (what the json holds:
  step, split, protocol, results, sparsity summary; the paths written; the markdown table)."""
  split = split or run.config.data.eval_split
  step, state = run.trained_state(step)
  results = evaluate_seen(run, state, split, progress)
  summary = sparsity_summary(run.learner, state)
  protocol = describe_protocol(run.config)
  table = (f"{split} split, {protocol}\n\n" + results_table({f"step {step}": results}, run.learner.tasks) +
           "\n\n" + summary["table"])
  record = {"step": step, "split": split, "protocol": protocol, "results": results, "sparsity": summary}
  return record, write_results(os.path.join(run.workdir, "eval"), f"{split}_step{step}", record, table), table


def check_split(config, split: str, name: str = "--split") -> None:
  """ConfigError naming `split` (given as `name`, a flag or config key) and the dataset's splits unless the data of
  `config` has it (checked before a run is opened or trained, so that a wrong split writes nothing)."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # TFDS warns of a custom builder config: the error is to be the only line
  try:
    splits = open_dataset(config.data, config.image_size).builder.info.splits
  except ValueError as e:  # an unknown data.name
    raise ConfigError(str(e)) from e
  finally:
    logging.set_verbosity(verbosity)
  if split not in splits:
    raise ConfigError(f"{name}={split!r} is not a split of {config.data.name}; choose one of {sorted(splits)}")
