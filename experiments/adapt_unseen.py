r"""Adapts a meta-trained run to its unseen tasks (new heads, sparsity pattern fixed) and evaluates all tasks.

python experiments/adapt_unseen.py --workdir=runs/budget [--step=N]
python experiments/adapt_unseen.py --workdir=runs/budget --config.adapt.train=heads_and_backbone

Writes DIR/adapt/<train>_step<N>.json and .md and prints the table.
"""
from absl import flags

from experiments.run import script
from experiments.run.unseen import adapt_and_write
from experiments.run.training import open_run

_CONFIG = script.define_optional_config()
flags.adopt_module_key_flags(script)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a meta_train.py run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to adapt (default: the latest).")


def main(argv):
  script.start(argv)
  with script.clear_errors():
    run = open_run(script.run_config(_CONFIG, _WORKDIR.value), _WORKDIR.value)
    try:
      _, paths, table = adapt_and_write(run, _STEP.value)
    finally:
      run.close()
    print(table)
    print(f"written to {', '.join(paths)}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  script.run(main, workdir_of=lambda: _WORKDIR.value)
