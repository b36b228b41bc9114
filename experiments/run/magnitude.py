"""Magnitude pruning of a finished dense run into a run of its own (the structured-pruning baseline's network), or
the zero pattern of another run put on its weights (does a learned structure pay on dense-trained weights?).

The pruned network is written as a checkpoint of a new workdir, at the step the dense run had reached, so that
evaluate.py, adapt_unseen.py, export.py and finetune.py take it like any other run.
"""
import copy

import ml_collections

from experiments.run.training import check_same_network, load_config, open_run, trained_network
from msp.sparsity import magnitude_prune
from msp.train.checkpoint import CheckpointError
from msp.train.files import absolute, as_path


def pruned_config(config: ml_collections.ConfigDict, source: str, step: int | None) -> ml_collections.ConfigDict:
  """`config` (the dense run's, with a `prune` section) recording where the pruned network came from."""
  c = copy.deepcopy(config)
  c.init.from_run = absolute(source)
  c.init.step = step
  return c


def prune_run(source: str, workdir: str, config: ml_collections.ConfigDict | None = None,
              step: int | None = None) -> tuple[int, float]:
  """Prunes the network of the run in `source` (checkpoint `step`; None: its best, else its latest) by channel
  norm to `config.prune.flops_kept` of the backbone's FLOPs with `config.prune.scope` (`msp.sparsity.magnitude`),
  keeping `config.safeguards.min_channels` per layer, and saves it in the new run `workdir`. With
  `config.prune.pattern_from` (a run directory) the channels kept are instead those alive in that run's network
  (its best, else latest checkpoint), which must be the same network.

  config: the pruned run's (default: the source's config.json); its network must be the source's.
  Returns (the step saved, the fraction of the backbone's FLOPs kept). Raises CheckpointError when `workdir` already
  holds a run, ConfigError when the networks differ or a prune value is bad.
  """
  config = load_config(source) if config is None else config
  if (as_path(workdir) / "config.json").exists():
    raise CheckpointError(f"{workdir} already holds a run: prune into a new workdir")
  step, trained = trained_network(source, step)
  pattern_from = config.prune.get("pattern_from")
  if pattern_from:
    _, pattern = trained_network(pattern_from)
    check_same_network(pattern, trained, f"config.prune.pattern_from={pattern_from}")
  run = open_run(pruned_config(config, source, step), workdir)
  try:
    fresh = run.fresh_state()
    check_same_network(trained, fresh, f"--from={source}")
    p, spec = run.config.prune, run.learner.spec
    if pattern_from:
      params = spec.scale_groups(trained.params, spec.alive(pattern.params))
      reached = float(run.learner.cost_model.flops_kept(params))
    else:
      params, reached = magnitude_prune(trained.params, spec, run.learner.cost_model, p.flops_kept, p.scope,
                                        run.config.safeguards.min_channels)
    # λ has one entry per layer of this run's groups, which need not be the source's (sparsity.tie_streams)
    pruned = trained.replace(params=params, rho=fresh.rho, rho_opt_state=fresh.rho_opt_state)
    run.checkpointer.save(step, pruned, {"next_index": step}, force=True)
    run.checkpointer.wait()
  finally:
    run.close()
  return step, reached
