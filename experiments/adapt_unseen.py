r"""Adapts a meta-trained run to its unseen tasks (new heads, sparsity pattern fixed) and evaluates all tasks.

python experiments/adapt_unseen.py --workdir=runs/budget [--step=N]
python experiments/adapt_unseen.py --workdir=runs/budget --config.adapt.train=heads_and_backbone

Writes DIR/adapt/<train>_step<N>.json and .md and prints the table.
"""
from absl import flags

from experiments import common
from experiments.adaptation import write_adaptation
from experiments.train import open_run

_CONFIG = common.define_optional_config()
flags.adopt_module_key_flags(common)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a meta_train.py run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to adapt (default: the latest).")


def main(argv):
  common.start(argv)
  with common.clear_errors():
    run = open_run(common.run_config(_CONFIG, _WORKDIR.value), _WORKDIR.value)
    try:
      step, state = run.trained_state(_STEP.value)
      _, table, paths = write_adaptation(run, step, state)
      print(table)
      print(f"written to {', '.join(paths)}")
    finally:
      run.close()


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  common.run(main, workdir_of=lambda: _WORKDIR.value)
