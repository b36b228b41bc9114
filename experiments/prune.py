r"""Prunes a finished dense run by channel norm to a FLOPs target: the magnitude-pruning baseline; or to the zero
pattern of another run (experiments/run/magnitude.py).

python experiments/prune.py --from=runs/dense_mtl --workdir=runs/magnitude \
    [--config.prune.flops_kept=0.25] [--config.prune.scope=global] [--step=N]
python experiments/prune.py --from=runs/dense_mtl --workdir=runs/budget_pattern --pattern_from=runs/budget

The second form keeps the channels that runs/budget's network kept, whatever their norms (the same network;
config.prune.pattern_from). Writes checkpoint N (default: the dense run's best, else its latest) of a new run in
--workdir; then evaluate.py, adapt_unseen.py, export.py and finetune.py take --workdir like any run.
"""
from absl import flags

from experiments.run import script
from experiments.run.magnitude import prune_run

_CONFIG = script.define_optional_config()
flags.adopt_module_key_flags(script)
_FROM = flags.DEFINE_string("from", None, "Directory of the finished dense run to prune.")
_WORKDIR = flags.DEFINE_string("workdir", None, "New directory for the pruned run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint of --from to prune (default: the best, else the latest).")
_PATTERN_FROM = flags.DEFINE_string("pattern_from", None, "A finished run of the same network whose zero pattern "
                                    "to keep instead of pruning by norm (sets config.prune.pattern_from).")


def main(argv):
  script.start(argv)
  with script.clear_errors():
    config = script.run_config(_CONFIG, _FROM.value)
    if _PATTERN_FROM.value:
      with config.unlocked():  # a config.json written before the key existed lacks it
        config.prune.pattern_from = _PATTERN_FROM.value
    step, reached = prune_run(_FROM.value, _WORKDIR.value, config, _STEP.value)
    how = (f"the pattern of {config.prune.pattern_from}" if config.prune.get("pattern_from")
           else config.prune.scope)
    print(f"pruned step {step} of {_FROM.value} to {reached:.1%} of the backbone's FLOPs ({how}); "
          f"written to {_WORKDIR.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["from", "workdir"])
  script.run(main, workdir_of=lambda: _FROM.value)
