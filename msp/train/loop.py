"""The outer loop: call the jitted meta-step on successive meta-batches, with a progress bar and logging."""
from typing import Callable, Iterator

import jax
import numpy as np
import tqdm

from msp.meta import MetaBatch
from msp.parallel import shard_episodes
from msp.train.safeguards import LambdaWatch
from msp.train.setup import MetaLearner
from msp.train.state import MetaTrainState


def meta_train(learner: MetaLearner, state: MetaTrainState, meta_batches: Iterator[MetaBatch], num_steps: int,
               log_every: int = 0, on_log: Callable[[int, dict], None] | None = None, progress: bool = True,
               start_step: int = 0, on_step: Callable[[int, MetaTrainState], None] | None = None,
               ) -> tuple[MetaTrainState, list[dict]]:
  """Runs outer steps start_step + 1 … num_steps; every `log_every` steps (and at the last) fetches metrics.

  on_log(step, record) sees each logged record; on_step(step, state) runs after every step (checkpointing).
  Returns the final state and the logged metrics (dicts of numpy arrays with key `step`).
  """
  history = []
  watch = LambdaWatch(learner.spec.names, learner.safeguards.runaway_factor, learner.safeguards.runaway_window)
  bar = tqdm.trange(start_step, num_steps, initial=start_step, total=num_steps, desc="meta-train",
                    disable=not progress, dynamic_ncols=True)
  for i in bar:
    step = i + 1
    state, metrics = learner.train_step(state, shard_episodes(next(meta_batches), learner.mesh))
    if (log_every and step % log_every == 0) or step == num_steps:
      record = {"step": step, **jax.tree.map(np.asarray, jax.device_get(metrics))}
      history.append(record)
      watch.update(step, record["lambda"])
      bar.set_postfix(loss=f"{float(record['loss']):.4f}", sparsity=f"{float(record['group_sparsity_total']):.1%}")
      if on_log is not None:
        on_log(step, record)
    if on_step is not None:
      on_step(step, state)
  return state, history
