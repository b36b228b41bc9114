r"""Scores the seen tasks of a meta-trained run by the evaluation protocol (`msp.train.evaluation`) on the test split.

python experiments/evaluate.py --workdir=runs/budget [--step=N] [--split=test]

Writes DIR/eval/<split>_step<N>.json and .md and prints the table.
"""
from absl import flags

from experiments import common
from experiments.evaluation import check_split, write_evaluation
from experiments.train import open_run

_CONFIG = common.define_optional_config()
flags.adopt_module_key_flags(common)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a meta_train.py run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.data.eval_split).")


def main(argv):
  common.start(argv)
  with common.clear_errors():
    config = common.run_config(_CONFIG, _WORKDIR.value)
    split = _SPLIT.value or config.data.eval_split
    check_split(config, split)
    run = open_run(config, _WORKDIR.value)
    try:
      step, state = run.trained_state(_STEP.value)
      payload, table, paths = write_evaluation(run, step, state, split)
      summary = payload["sparsity"]
      print(table)
      print(f"group sparsity {summary['group_sparsity_total']:.1%}, FLOPs kept {summary['flops_kept']:.1%}; "
            f"written to {', '.join(paths)}")
    finally:
      run.close()


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  common.run(main, workdir_of=lambda: _WORKDIR.value)
