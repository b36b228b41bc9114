r"""Fine-tunes a finished run's structure on its seen tasks: the comparison protocol (experiments/run/comparison.py).

python experiments/finetune.py --workdir=runs/budget [--step=N] [--config.finetune.steps=300]
then   python experiments/evaluate.py --workdir=runs/budget/finetuned --step=B   (B: finetuned/checkpoints_best/best.json)

Writes the fine-tuning run into WORKDIR/finetuned (config.json, checkpoints/, checkpoints_best/, metrics.jsonl,
TensorBoard events); the same command resumes it. SIGTERM or Ctrl-C: as meta_train.py.
"""
import sys

from absl import flags

from experiments.run import script
from experiments.run.comparison import finetune
from experiments.run.training import Preempted, skipped_steps

_CONFIG = script.define_optional_config()
flags.adopt_module_key_flags(script)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a finished run (meta_train.py or prune.py).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint to start from (default: the best, else the latest).")


def main(argv):
  script.start(argv)
  with script.clear_errors():
    config = script.run_config(_CONFIG, _WORKDIR.value)
    try:
      out, state = finetune(_WORKDIR.value, config, _STEP.value)
    except Preempted as e:
      print(e, file=sys.stderr)
      sys.exit(128 + e.signum)
    print(f"fine-tuned into {out} to step {int(state.step)}: {skipped_steps(state)} of {int(state.step)} steps "
          f"skipped (a non-finite or outlying meta-gradient)")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  script.run(main, workdir_of=lambda: _WORKDIR.value)
