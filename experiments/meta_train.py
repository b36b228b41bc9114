r"""Meta-trains a multi-task network with learned sparsity; resumes from the latest checkpoint in --workdir.

python experiments/meta_train.py --config=experiments/configs/synthetic.py:budget --workdir=runs/budget \
    [--config.steps=1000 --config.budget.target=0.75 ...]

Writes DIR/config.json, DIR/checkpoints/<step>/, DIR/metrics.jsonl and TensorBoard events in DIR/tensorboard, and
ends with a line saying how many steps were skipped. SIGTERM or Ctrl-C: the current step finishes and is saved,
then the run exits with status 128 + the signal's number; the same command resumes it.
"""
import sys

from absl import flags
from ml_collections import config_flags

from experiments.run import script
from experiments.run.training import Preempted, skipped_steps, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run configuration: file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")


def main(argv):
  script.start(argv)
  with script.clear_errors():
    try:
      state, _ = train(_CONFIG.value, _WORKDIR.value)
    except Preempted as e:
      print(e, file=sys.stderr)
      sys.exit(128 + e.signum)
  print(f"meta-trained {_WORKDIR.value} to step {int(state.step)}: {skipped_steps(state)} of {int(state.step)} steps "
        f"skipped (a non-finite or outlying meta-gradient)")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  script.run(main)
