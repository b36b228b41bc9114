"""The outer loop: call the jitted meta-step on successive meta-batches, with a progress bar, logging, the
divergence checks, an optional profiler trace and a stop request (a signal) honoured between steps."""
import collections
import time
from typing import Callable, Iterator

import jax
import numpy as np
import tqdm

from msp.meta import MetaBatch
from msp.parallel import shard_episodes
from msp.train.safeguards import DivergedError, LambdaWatch, nonfinite_names
from msp.train.setup import MetaLearner
from msp.train.state import MetaTrainState

# The skipped-step fraction is judged once this many steps (or the whole window, if shorter) have run: fewer
# would stop a healthy run for one early skip.
MIN_STEPS_JUDGED = 10


def meta_train(learner: MetaLearner, state: MetaTrainState, meta_batches: Iterator[MetaBatch], num_steps: int,
               log_every: int = 0, on_log: Callable[[int, dict], None] | None = None, progress: bool = True,
               start_step: int = 0, on_step: Callable[[int, MetaTrainState], None] | None = None,
               should_stop: Callable[[], bool] | None = None, profile: tuple[str, int] | None = None,
               ) -> tuple[MetaTrainState, list[dict]]:
  """Runs outer steps start_step + 1 … num_steps; every `log_every` steps (and at the last) fetches metrics.

  After every step: DivergedError (naming the step) when a part of the new state is NaN or inf, or when more than
  `safeguards.max_skipped_fraction` of the last `safeguards.skip_window` steps were skipped (judged from the
  `MIN_STEPS_JUDGED`-th step of this call on) — raised before on_step, so such a state is never saved;
  then on_step(step, state) (checkpointing); then, if should_stop() is true, the loop returns early.
  Logged records add steps_per_s and examples_per_s (since the previous record) and wall_time_s (since this call
  began). profile=(directory, n) traces steps start_step + 2 … start_step + n + 1 with jax.profiler (the first
  step compiles). Returns the state after the last step run and the logged records (dicts of numpy arrays with
  key `step`); on_log(step, record) sees each record.
  """
  history = []
  watch = LambdaWatch(learner.spec.names, learner.safeguards.runaway_factor, learner.safeguards.runaway_window)
  guards = learner.safeguards
  recent_skips = collections.deque(maxlen=guards.skip_window)
  bar = tqdm.trange(start_step, num_steps, initial=start_step, total=num_steps, desc="meta-train",
                    disable=not progress, dynamic_ncols=True)
  began = last_time = time.perf_counter()
  step = last_step = start_step
  trace_from, trace_to = (start_step + 2, start_step + 1 + profile[1]) if profile else (0, -1)
  for i in bar:
    step = i + 1
    if step == trace_from:
      jax.profiler.start_trace(profile[0])
    batch = next(meta_batches)
    support, query = jax.tree.leaves(batch.support)[0].shape, jax.tree.leaves(batch.query)[0].shape
    examples_per_step = support[0] * (support[1] + query[1])  # episodes × (support + query)
    state, metrics = learner.train_step(state, shard_episodes(batch, learner.mesh))
    finite, skipped, grad_norm = jax.device_get((metrics.pop("finite"), metrics["skipped"], metrics["grad_norm"]))
    if step == trace_to:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
    broken = nonfinite_names(finite)
    if broken:
      raise DivergedError(f"step {step}: the {' and the '.join(broken)} became NaN or inf, so the step was not "
                          f"saved (the newest checkpoint is the last good state); lower optim.lr or meta.inner_lr")
    recent_skips.append(bool(skipped))
    if (len(recent_skips) >= min(MIN_STEPS_JUDGED, guards.skip_window) and
        sum(recent_skips) > guards.max_skipped_fraction * len(recent_skips)):
      raise DivergedError(
          f"step {step}: {sum(recent_skips)} of the last {len(recent_skips)} steps were skipped (meta-gradient "
          f"non-finite or an outlier; last norm {float(grad_norm):.3g}), more than safeguards.max_skipped_fraction="
          f"{guards.max_skipped_fraction:g}, so the run stopped before saving it; lower optim.lr or meta.inner_lr")
    if (log_every and step % log_every == 0) or step == num_steps:
      now = time.perf_counter()
      rate = (step - last_step) / max(now - last_time, 1e-9)
      record = {"step": step, **jax.tree.map(np.asarray, jax.device_get(metrics)), "steps_per_s": rate,
                "examples_per_s": rate * examples_per_step, "wall_time_s": now - began}
      last_time, last_step = now, step
      history.append(record)
      watch.update(step, record["lambda"])
      bar.set_postfix(loss=f"{float(record['loss']):.4f}", sparsity=f"{float(record['group_sparsity_total']):.1%}")
      if on_log is not None:
        on_log(step, record)
    if on_step is not None:
      on_step(step, state)
    if should_stop is not None and should_stop():
      break
  if trace_from <= step < trace_to:
    jax.profiler.stop_trace()
  bar.close()
  return state, history
