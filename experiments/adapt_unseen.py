r"""Adapts a meta-trained run to its unseen tasks (new heads, sparsity pattern fixed) and evaluates all tasks.

python experiments/adapt_unseen.py --workdir=runs/budget [--step=N]
python experiments/adapt_unseen.py --workdir=runs/budget --config.adapt.train=heads_and_backbone

Writes DIR/adapt/<train>_step<N>.json and .md and prints the table.
"""
import os

from absl import flags

from experiments import common
from experiments.adaptation import adapt_unseen
from msp.train.evaluation import results_table, write_results
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
      out = adapt_unseen(run, state)
      table = results_table({"unseen (adapted)": out["unseen"]}, out["tasks"]) + "\n\n" + results_table(
          {"seen": out["seen"]}, run.learner.tasks)
      train = run.config.adapt.train
      paths = write_results(os.path.join(run.workdir, "adapt"), f"{train}_step{step}",
                            {"step": step, "train": train, "unseen": out["unseen"], "seen": out["seen"],
                             "final_loss": out["losses"][-1] if out["losses"] else None}, table)
      print(table)
      print(f"written to {', '.join(paths)}")
    finally:
      run.close()


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  common.run(main, workdir_of=lambda: _WORKDIR.value)
