"""The comparison protocol's fine-tuning: every method's structure trained the same way before it is compared.

A finished run's network (its best checkpoint, else its latest) starts a new run in WORKDIR/finetuned with its zero
pattern held fixed (`sparsity.freeze_pattern`): dense multi-task training (`meta.mode="joint"`, every seen task in
every episode, no λ, no budget) of the surviving channels for `finetune.steps` outer steps at `finetune.lr`, scored
on `eval.select_split` every `finetune.eval_every` steps, the best checkpoint kept. Same steps, learning rate and
schedule whatever the method, so that no method gets more training than another.
"""
import copy
import os

import ml_collections

from experiments.run.training import load_config, train
from msp.train.files import absolute
from msp.train.state import MetaTrainState

FINETUNED = "finetuned"  # the fine-tuned run's workdir, inside the run it starts from


def finetune_config(config: ml_collections.ConfigDict, workdir: str,
                    step: int | None = None) -> ml_collections.ConfigDict:
  """The config of the fine-tuning run of the run in `workdir` (whose config is `config`), from its checkpoint
  `step` (None: its best, else its latest)."""
  c = copy.deepcopy(config)
  c.meta.mode = "joint"
  c.meta.task_sampling = "all"
  c.sparsity.update(enabled=False, learn_lambda=False, freeze_pattern=True)
  c.budget.enabled = False
  c.steps = c.finetune.steps
  c.optim.lr = c.finetune.lr
  c.eval_every = c.checkpoint_every = c.finetune.eval_every
  c.init.from_run = absolute(workdir)
  c.init.step = step
  return c


def finetune(workdir: str, config: ml_collections.ConfigDict | None = None, step: int | None = None,
             progress: bool = True) -> tuple[str, MetaTrainState]:
  """Fine-tunes the run in `workdir` (config: its config.json, or `config` with overrides) into
  WORKDIR/finetuned, resuming it when it was interrupted; returns that directory and the final state."""
  config = load_config(workdir) if config is None else config
  out = os.path.join(workdir, FINETUNED)
  state, _ = train(finetune_config(config, workdir, step), out, progress)
  return out, state
