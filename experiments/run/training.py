"""A run in a workdir: its config, dataset, learner and checkpoints; meta-training with logs and automatic resume.

This layer joins the library (`msp`) and the data (`data_pipelines`); neither of them imports it.

Everything a resumed run needs is in the checkpoint (the MetaTrainState and the input pipeline's position), so a
run stopped after N steps and started again computes exactly what an uninterrupted run computes. What protects a
workdir: nothing is written before the config, the data and the workdir have been checked; a corrupt newest
checkpoint is set aside with a warning (`RunCheckpointer.restore_latest_readable`), while a checkpoint that does not
fit the config, or a run none of whose checkpoints can be read, is refused; a shorter `steps` than the run has
reached is refused; a state with NaN or inf is never saved; a failed write (a full disk) ends the run with one
error naming the file; SIGTERM or SIGINT end the run after the current step with a checkpoint, or after
STOP_GRACE_S seconds if that step cannot finish; logs hold each step once after any number of resumes.
"""
import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import threading

import jax
import ml_collections

from data_pipelines.datasets import DATASETS, Dataset, open_dataset
from data_pipelines.episodes import MetaBatchSampler, meta_batch_dataset
from experiments.run.scoring import check_split, evaluate_seen
from msp.parallel import any_process, is_primary
from msp.train.checkpoint import CheckpointError, RunCheckpointer, drop_retired
from msp.train.config import ConfigError, complete
from msp.train.evaluation import Results, shown_metrics
from msp.train.files import absolute, as_path, os_reason, write_text_atomic
from msp.train.loop import meta_train
from msp.train.safeguards import finite_parts, nonfinite_names
from msp.train.setup import MetaLearner, build_meta_learner
from msp.train.state import MetaTrainState
from msp.train.writer import MetricWriter

BEST = "checkpoints_best"  # the best checkpoint by eval.select_metric, and best.json naming it
# After a first SIGTERM or SIGINT a run has this long to finish its step and save it (a cloud VM's preemption
# notice gives about 30 s); past it, a stuck write is abandoned and the process ends (the newest complete checkpoint
# stays: an interrupted save never shows up as one).
STOP_GRACE_S = 25.0


class Preempted(Exception):
  """Training was asked to stop by a signal, and saved the step it had reached."""

  def __init__(self, signal_name: str, step: int, num_steps: int, signum: int, skipped: int):
    super().__init__(f"stopped by {signal_name} after step {step} of {num_steps} ({skipped} skipped); the "
                     f"checkpoint of step {step} is saved: run the same command to resume")
    self.signum = signum


def skipped_steps(state: MetaTrainState) -> int:
  """Outer steps of the run so far whose meta-gradient was skipped (non-finite or an outlier)."""
  return int(state.step) - int(state.accepted_steps)


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

  @functools.cached_property
  def best_checkpointer(self) -> RunCheckpointer:
    return RunCheckpointer(self.workdir, self.config, save_every=1, max_to_keep=1, subdirectory=BEST)

  def fresh_state(self) -> MetaTrainState:
    return self.learner.init_state(jax.random.key(self.config.seed))

  def initial_state(self) -> MetaTrainState:
    """The state a new run starts from: fresh, or with `init.from_run` the params and BatchNorm statistics of that
    run's checkpoint `init.step` (`trained_network`) in a fresh state (optimisers, λ and budget start anew).

    Raises ConfigError when that run's network differs from this run's (another model or other seen tasks)."""
    fresh = self.fresh_state()
    source = self.config.get("init", {}).get("from_run")
    if not source:
      return fresh
    _, trained = trained_network(source, self.config.init.step)
    check_same_network(trained, fresh, f"config.init.from_run={source!r}")
    return fresh.replace(params=trained.params, batch_stats=trained.batch_stats)

  def state(self, step: int | None = None) -> tuple[MetaTrainState, dict]:
    """(state, data_state) of checkpoint `step` (None: the latest), or a fresh state and {} without checkpoints."""
    fresh = self.fresh_state()
    if step is None and self.checkpointer.latest_step() is None:
      return fresh, {}
    return self.checkpointer.restore(fresh, step)

  def trained_state(self, step: int | None = None) -> tuple[int, MetaTrainState]:
    """(step, state) of checkpoint `step` (None: the latest; a step only in checkpoints_best/ is found there).

    Raises CheckpointError when the run has no such checkpoint, when it is corrupt, or when its state holds NaN or
    inf (a state that must not be evaluated or exported)."""
    step = self.checkpointer.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.checkpointer.directory}: run meta_train.py first")
    checkpointer = self.checkpointer
    if not (self.checkpointer.directory / str(step)).exists() and (self.best_checkpointer.directory / str(step)).exists():
      checkpointer = self.best_checkpointer
    state = checkpointer.restore(self.fresh_state(), step)[0]
    broken = nonfinite_names(jax.device_get(finite_parts(state)))
    if broken:
      raise CheckpointError(f"the checkpoint {checkpointer.directory / str(step)} holds NaN or inf in its "
                            f"{' and '.join(broken)}: it cannot be evaluated or exported")
    return step, state

  def close(self) -> None:
    self.checkpointer.close()
    if "best_checkpointer" in self.__dict__:
      self.best_checkpointer.close()


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was started with (its config.json)."""
  path = as_path(workdir) / "config.json"
  if not path.exists():
    raise CheckpointError(f"{path} does not exist: is {workdir!r} the workdir of a meta_train.py run?")
  try:
    config = json.loads(path.read_text(encoding="utf-8"))
  except OSError as e:
    raise CheckpointError(f"cannot read {path}: {os_reason(e)}") from e
  except ValueError as e:
    raise CheckpointError(f"{path} is not valid JSON ({e}): restore the run's config") from e
  return ml_collections.ConfigDict(complete(drop_retired(config, path)))


def check_same_network(source: MetaTrainState, target: MetaTrainState, what: str) -> None:
  """ConfigError naming `what` unless the two states' params and BatchNorm statistics have the same tree, shapes
  and dtypes (the network of one run can start another)."""
  shapes = lambda state: jax.tree.map(lambda x: (x.shape, x.dtype), (state.params, state.batch_stats))
  if shapes(source) != shapes(target):
    raise ConfigError(f"{what}: that run's network differs from this run's (model, tasks or heads)")


def read_best(workdir: str) -> dict | None:
  """WORKDIR/checkpoints_best/best.json ({"step", "metric", "value", "split"} of the run's best checkpoint by
  eval.select_metric), None when the run kept none (trained without eval_every). CheckpointError when unreadable."""
  path = as_path(workdir) / BEST / "best.json"
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read {path}: {e}") from e


def best_step(workdir: str) -> int | None:
  """The step of the run's best checkpoint (`read_best`), None when it kept none."""
  best = read_best(workdir)
  return None if best is None else int(best["step"])


def trained_network(workdir: str, step: int | None = None) -> tuple[int, MetaTrainState]:
  """(step, state) of the finished run in `workdir` (`Run.trained_state`): checkpoint `step`, or (None) its best
  checkpoint when it kept one, else its latest. Raises CheckpointError as `trained_state` does."""
  run = open_run(load_config(workdir), workdir)
  try:
    return run.trained_state(best_step(workdir) if step is None else step)
  finally:
    run.close()


def open_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Validates `config` and checks it against the workdir's; writes nothing (the first checkpoint writes).

  Raises ConfigError (a bad config value, naming the key) or CheckpointError (an unusable or incompatible workdir,
  naming the path and the differing keys).
  """
  if not workdir:
    raise ConfigError("--workdir is required: the directory for checkpoints, logs and results")
  if config.data.name not in DATASETS:
    raise ConfigError(f"config.data.name={config.data.name!r}; choose one of {sorted(DATASETS)}")
  learner = build_meta_learner(config)
  checkpointer = RunCheckpointer(workdir, config, save_every=config.checkpoint_every,
                                 max_to_keep=config.get("keep_checkpoints", 3))
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


@contextlib.contextmanager
def stop_requests(grace_s: float | None = None):
  """Yields a function that returns the name of a SIGTERM or SIGINT received meanwhile (None before one).

  The first such signal records its arrival (training ends after the current step, with a checkpoint) and starts
  a watchdog: if the block has not ended `grace_s` seconds later (a write that hangs), the process ends with one
  line and status 128 + the signal's number (None: STOP_GRACE_S). A second signal acts as it would without this
  handler. Outside the main thread signals cannot be caught: the function then always returns None.

  The watchdog learns of the signal through `signal.set_wakeup_fd`, not from the Python handler: that handler runs
  only when the main thread runs Python code, which a thread blocked on a hung write does not."""
  grace_s = STOP_GRACE_S if grace_s is None else grace_s
  received = []
  if threading.current_thread() is not threading.main_thread():
    yield lambda: None
    return

  def record(signum, _):
    if not received:
      received.append(signum)
    signal.signal(signum, previous[signum])

  stopping = (signal.SIGTERM, signal.SIGINT)
  previous = {s: signal.signal(s, record) for s in stopping}
  wakeup_read, wakeup_write = os.pipe()
  os.set_blocking(wakeup_write, False)
  previous_wakeup = signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
  done = threading.Event()

  def watchdog():
    while data := os.read(wakeup_read, 1):  # b"" once the block has ended (the write end is closed)
      if data[0] in stopping:
        if not done.wait(grace_s):
          _give_up(data[0], grace_s)
        return

  watcher = threading.Thread(target=watchdog, name="msp-stop-watchdog", daemon=True)
  watcher.start()
  try:
    yield lambda: signal.Signals(received[0]).name if received else None
  finally:
    done.set()
    signal.set_wakeup_fd(previous_wakeup)
    os.close(wakeup_write)
    watcher.join()
    os.close(wakeup_read)
    for s, handler in previous.items():
      signal.signal(s, handler)


def _give_up(signum: int, grace_s: float) -> None:
  """The watchdog of `stop_requests`: the run did not stop within `grace_s` of the signal."""
  print(f"error: stopped by {signal.Signals(signum).name}: the step in progress could not be finished and saved "
        f"within {grace_s:g} s (a write is stuck), so it was abandoned; the newest complete checkpoint is kept: run "
        f"the same command to resume", file=sys.stderr, flush=True)
  os._exit(128 + signum)  # pylint: disable=protected-access


class BestCheckpoint:
  """Keeps the checkpoint of the step whose `eval.select_metric` on `eval.select_split` is best so far, in
  WORKDIR/checkpoints_best/<step>/, and names it in WORKDIR/checkpoints_best/best.json."""

  def __init__(self, run: Run):
    metrics = {f"{task}/{metric}": better for task, metric, better in shown_metrics(run.learner.tasks)}
    self.metric = run.config.eval.get("select_metric") or next(iter(metrics))
    if self.metric not in metrics:
      raise ConfigError(f"config.eval.select_metric={self.metric!r}; choose one of {sorted(metrics)}")
    self.higher_is_better = metrics[self.metric]
    self.run = run
    self.path = run.best_checkpointer.directory / "best.json"
    self.best = read_best(run.workdir)

  def update(self, step: int, state: MetaTrainState, results: Results) -> bool:
    """Saves `state` as the best checkpoint when its score in `results` beats the best so far; returns whether."""
    task, metric = self.metric.split("/", 1)
    value = results[task][metric]
    if self.best is not None and not (value > self.best["value"] if self.higher_is_better else
                                      value < self.best["value"]):
      return False
    if self.run.best_checkpointer.save(step, state, {"next_index": step}, force=True):
      self.best = {"step": step, "metric": self.metric, "value": value,
                   "split": self.run.config.eval.select_split}
      write_text_atomic(self.path, json.dumps(self.best, indent=1) + "\n")
    return True


def train(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> tuple[MetaTrainState, list]:
  """Meta-trains `config` in `workdir` up to `config.steps` outer steps, resuming from its latest checkpoint.

  Logs every `log_every` steps to metrics.jsonl and TensorBoard (the config as hparams), checkpoints every
  `checkpoint_every` steps and at the end, keeping `keep_checkpoints`; every `eval_every` steps scores the seen
  tasks on `eval.select_split` and keeps the best checkpoint. Returns the final state and the records logged by
  this call. Raises CheckpointError (a workdir that holds more steps than `steps`, unreadable or incompatible
  checkpoints, a failed write: each names the path), DivergedError (NaN or inf, or too many skipped steps) or
  Preempted (SIGTERM / SIGINT, after saving).
  """
  run = open_run(config, workdir)
  try:
    return _train(run, config, workdir, progress)
  except OSError as e:  # a file outside msp's own writers: a full disk, a lost mount, permissions
    where = e.filename or f"the run directory {workdir}"
    raise CheckpointError(f"cannot write {where}: {os_reason(e)}") from e
  finally:
    run.close()


def _train(run: Run, config: ml_collections.ConfigDict, workdir: str, progress: bool) -> tuple[MetaTrainState, list]:
  """`train` on an open run."""
  latest = run.checkpointer.latest_step()
  if latest is not None and latest > config.steps:
    raise CheckpointError(f"{run.checkpointer.directory} already holds step {latest}, past config.steps="
                          f"{config.steps}: a shorter run would relabel and delete its checkpoints (use "
                          f"evaluate.py --step for an earlier one, or another workdir)")
  check_split(config, config.data.train_split, "config.data.train_split")
  if config.eval_every:
    check_split(config, config.eval.select_split, "config.eval.select_split")
  best = BestCheckpoint(run) if config.eval_every else None
  restored = run.checkpointer.restore_latest_readable(run.fresh_state())
  state = restored[0] if restored else run.initial_state()
  start = int(state.step)
  batches = meta_batches(run.config, run.dataset, start)
  as_path(workdir).mkdir(parents=True, exist_ok=True)
  names = {"lambda": run.learner.spec.names, "lambda_at_bound": run.learner.spec.names,
           "floor_engaged": run.learner.spec.names, "alive_channels": run.learner.spec.names,
           "group_sparsity": run.learner.spec.names, "task_loss": config.seen_tasks}
  profile = (os.path.join(absolute(workdir), "profile"), config.profile_steps) if config.get(
      "profile_steps") else None
  with stop_requests() as stopped:
    writer = MetricWriter(workdir, names, resume_step=start) if is_primary() else None  # the job's one log
    if writer is not None and start == 0:
      writer.write_hparams(config.to_dict(), ["loss", "group_sparsity_total"])

    def on_step(step: int, state: MetaTrainState) -> None:
      if writer is not None and run.checkpointer.due(step):
        writer.flush()  # a bucket's logs are uploaded in batches: first every step up to this checkpoint
      run.checkpointer.save(step, state, {"next_index": step})
      if best is not None and step % config.eval_every == 0:
        split = config.eval.select_split
        results = evaluate_seen(run, state, split, progress=False)
        if writer is not None:
          writer.write(step, {f"{split}/{task}/{metric}": value for task, scores in results.items()
                              for metric, value in scores.items()})
        best.update(step, state, results)

    stop = []  # the signal's name once any process of the job has received one: they all stop after one step

    def should_stop() -> bool:
      if not stop and any_process(stopped() is not None):
        stop.append(stopped() or "SIGTERM")  # sent to another process of the job
      return bool(stop)

    try:
      state, history = meta_train(run.learner, state, batches, config.steps, config.log_every,
                                  on_log=writer and writer.write, progress=progress and is_primary(),
                                  start_step=start, on_step=on_step, should_stop=should_stop, profile=profile)
    finally:
      if writer is not None:
        writer.close()
    step = int(state.step)
    run.checkpointer.save(step, state, {"next_index": step}, force=True)
    if stop and step < config.steps:
      raise Preempted(stop[0], step, config.steps, getattr(signal, stop[0]), skipped_steps(state))
  return state, history
