r"""Runs a comparison sweep (experiments/configs/sweep.py): every method × seed through the same stages, resumably.

python experiments/sweep.py --config=experiments/configs/sweep.py[:DATASET[,tiny]] --workdir=runs/sweep \
    [--shard=i/n] [--dry_run]

Prints the plan (each method, its runs, the stages done and to run) with an ETA, then runs what is missing: a
finished stage is skipped, an interrupted training or fine-tuning resumes from its checkpoint. Run k of a method
lives in WORKDIR/<method>/seed<k>/ (commas of the method become underscores), with sweep.json naming its method,
target, seed and the seconds each stage took. A method may end in run-config overrides, each `+KEY=VALUE`, set after
the sweep's own (e.g. `--config.methods='("budget,flops=0.25+budget.scale_lr=0.005",)'`); the whole string is the
run's label in the tables. Its stages:
  train               meta_train.py's training (magnitude runs: prune.py of the same seed's dense_mtl run)
  evaluate            evaluate.py → eval/test_step<N>.json: "as trained"
  adapt               adapt_unseen.py → adapt/heads_step<N>.json (when config.adapt names "trained"; never for
                      single-task runs)
  finetune            finetune.py → finetuned/: the comparison protocol
  evaluate_finetuned  evaluate.py of finetuned/'s best checkpoint: "after fine-tuning"
  adapt_finetuned     adapt_unseen.py of it (when config.adapt names "finetuned"; never for single-task runs)
  export              export.py of it → finetuned/export/ (parameters, FLOPs, latency on this machine)
--shard=i/n (1 ≤ i ≤ n) runs the i-th of n disjoint slices, so that n processes or machines share a sweep (a
magnitude run is in the slice of the dense run it prunes); run each slice in one process at a time. A stage that
fails is reported in one line and the rest of its run (and the runs pruned from it) is skipped; the sweep goes on
and exits with status 1, naming them. SIGTERM or Ctrl-C: the training in progress saves, and the sweep stops.
"""
import sys

from absl import flags
from ml_collections import config_flags

from experiments.run import script
from experiments.run.grid import Sweep, parse_shard

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep configuration: experiments/configs/sweep.py[:ARG].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the sweep's runs.")
_SHARD = flags.DEFINE_string("shard", "1/1", "i/n: run only the i-th of n disjoint slices of the sweep.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Only print the plan.")


def main(argv):
  script.start(argv)
  with script.clear_errors():
    root = _WORKDIR.value
    sweep = Sweep(_CONFIG.value, root, parse_shard(_SHARD.value))
    print(sweep.plan_table())
    if _DRY_RUN.value:
      return
    failed = sweep.run()
  print(f"\nsweep finished: {len(sweep.jobs) - len(failed)} of {len(sweep.jobs)} runs complete in {root}")
  print(f"tables: python experiments/reports/tables.py --runs='{root}/*/seed*' --baseline='{root}/single_task*/seed*' "
        f"--out={root}/tables")
  if failed:
    print(f"failed: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1)

if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  script.run(main)
