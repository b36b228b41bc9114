r"""Scores the seen tasks of a meta-trained run by the evaluation protocol (`msp.train.evaluation`) on the test split.

python experiments/evaluate.py --workdir=runs/budget [--step=N] [--split=test]

Writes DIR/eval/<split>_step<N>.json and .md and prints the table.
"""
from absl import flags

from experiments.run import script
from experiments.run.scoring import check_split, evaluate_and_write
from experiments.run.training import open_run

_CONFIG = script.define_optional_config()
flags.adopt_module_key_flags(script)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a meta_train.py run.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.data.eval_split).")


def main(argv):
  script.start(argv)
  with script.clear_errors():
    config = script.run_config(_CONFIG, _WORKDIR.value)
    split = _SPLIT.value or config.data.eval_split
    check_split(config, split)
    run = open_run(config, _WORKDIR.value)
    try:
      record, paths, table = evaluate_and_write(run, _STEP.value, split)
    finally:
      run.close()
    summary = record["sparsity"]
    print(table)
    print(f"group sparsity {summary['group_sparsity_total']:.1%}, FLOPs kept {summary['flops_kept']:.1%}; "
          f"written to {', '.join(paths)}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  script.run(main, workdir_of=lambda: _WORKDIR.value)
