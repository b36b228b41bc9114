"""A run in a workdir: its config, dataset, learner and checkpoints; meta-training with logs and automatic resume.

This layer joins the library (`msp`) and the data (`data_pipelines`); neither of them imports it.

Everything a resumed run needs is in the checkpoint (the MetaTrainState and the input pipeline's position), so a
run stopped after N steps and started again computes exactly what an uninterrupted run computes.
"""
import dataclasses
import functools
import json
import os

import jax
import ml_collections

from data_pipelines.datasets import DATASETS, Dataset, open_dataset
from data_pipelines.episodes import MetaBatchSampler, meta_batch_dataset
from msp.train.checkpoint import CheckpointError, RunCheckpointer
from msp.train.config import ConfigError
from msp.train.loop import meta_train
from msp.train.setup import MetaLearner, build_meta_learner
from msp.train.state import MetaTrainState
from msp.train.writer import MetricWriter


@dataclasses.dataclass
class Run:
  """The static pieces of a run; `state()` gives its latest (or a fresh) MetaTrainState.

  The dataset is opened on first use, so that commands that only read checkpoints (export) need no data."""
  config: ml_collections.ConfigDict
  workdir: str
  learner: MetaLearner
  checkpointer: RunCheckpointer

  @functools.cached_property
  def dataset(self) -> Dataset:
    return open_dataset(self.config.data, self.config.image_size)

  def fresh_state(self) -> MetaTrainState:
    return self.learner.init_state(jax.random.key(self.config.seed))

  def state(self, step: int | None = None) -> tuple[MetaTrainState, dict]:
    """(state, data_state) of checkpoint `step` (None: the latest), or a fresh state and {} without checkpoints."""
    fresh = self.fresh_state()
    if step is None and self.checkpointer.latest_step() is None:
      return fresh, {}
    return self.checkpointer.restore(fresh, step)

  def trained_state(self, step: int | None = None) -> tuple[int, MetaTrainState]:
    """(step, state) of checkpoint `step` (None: the latest); CheckpointError when the run has none."""
    step = self.checkpointer.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.checkpointer.directory}: run meta_train.py first")
    return step, self.checkpointer.restore(self.fresh_state(), step)[0]

  def close(self) -> None:
    self.checkpointer.close()


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was started with (its config.json)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CheckpointError(f"{path} does not exist: is {workdir!r} the workdir of a meta_train.py run?")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def open_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Validates `config`, checks it against the workdir's (creating the workdir for a new run) and opens the data.

  Raises ConfigError (a bad config value, naming the key) or CheckpointError (an unusable or incompatible workdir,
  naming the path and the differing keys) before anything is written.
  """
  if not workdir:
    raise ConfigError("--workdir is required: the directory for checkpoints, logs and results")
  if config.data.name not in DATASETS:
    raise ConfigError(f"config.data.name={config.data.name!r}; choose one of {sorted(DATASETS)}")
  learner = build_meta_learner(config)
  checkpointer = RunCheckpointer(workdir, config, save_every=config.checkpoint_every)
  return Run(config=config, workdir=workdir, learner=learner, checkpointer=checkpointer)


def meta_batches(c: ml_collections.ConfigDict, dataset: Dataset, start_step: int):
  """The meta-batch iterator of config `c` over `dataset`, positioned at meta-batch `start_step`."""
  augment = dataset.augmentation(c.data.get("augment"))
  sampler = MetaBatchSampler(dataset.source(c.data.train_split, fitted=augment is None),
                             dataset.targets(c.tasks, c.seen_tasks), c.meta.episodes, c.meta.support_size,
                             c.meta.query_size, seed=c.seed, task_sampling=c.meta.task_sampling, transform=augment)
  iterator = iter(meta_batch_dataset(sampler, num_threads=c.data.num_threads,
                                     prefetch_buffer_size=c.data.prefetch))
  iterator.set_state({"next_index": start_step})
  return iterator


def train(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> tuple[MetaTrainState, list]:
  """Meta-trains `config` in `workdir` up to `config.steps` outer steps, resuming from its latest checkpoint.

  Logs every `log_every` steps to metrics.jsonl and TensorBoard, checkpoints every `checkpoint_every` steps and
  at the end. Returns the final state and the records logged by this call.
  """
  run = open_run(config, workdir)
  try:
    state, _ = run.state()
    start = int(state.step)
    names = {"lambda": run.learner.spec.names, "lambda_at_bound": run.learner.spec.names,
             "floor_engaged": run.learner.spec.names, "alive_channels": run.learner.spec.names,
             "group_sparsity": run.learner.spec.names, "task_loss": config.seen_tasks}
    writer = MetricWriter(workdir, names)
    batches = meta_batches(run.config, run.dataset, start)
    save = lambda step, s: run.checkpointer.save(step, s, {"next_index": step})
    try:
      state, history = meta_train(run.learner, state, batches, config.steps, config.log_every,
                                  on_log=writer.write, progress=progress, start_step=start, on_step=save)
    finally:
      writer.close()
    run.checkpointer.save(config.steps, state, {"next_index": config.steps}, force=True)
    return state, history
  finally:
    run.close()
