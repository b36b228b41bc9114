r"""The whole method on the embedded synthetic scenes, in one command (what `make quickstart` runs).

python experiments/quickstart.py [--workdir=runs/quickstart] [--config=experiments/configs/synthetic.py:budget]

Builds the dataset (first run only), meta-trains in budget mode (resuming if the workdir has a checkpoint),
evaluates the seen tasks, adapts a new head to the unseen edge-detection task, and prints one table against the
untrained network put through the same adaptation.
"""
from absl import app, flags
from ml_collections import config_flags

from experiments import common
from msp.train.adaptation import adapt_unseen
from msp.train.evaluation import evaluate_seen, results_table, sparsity_summary, write_results
from msp.train.run import open_run, train

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/synthetic.py:budget",
                                          "Run configuration: file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Directory for checkpoints, logs and results.")
QUICKSTART_UNSEEN = ("edges",)


def main(argv):
  common.start(argv)
  config = _CONFIG.value
  with common.clear_errors():
    train(config, _WORKDIR.value)
    run = open_run(config, _WORKDIR.value)
    try:
      _, trained = run.trained_state()
      untrained = run.fresh_state()
      seen = {"untrained": evaluate_seen(run, untrained), "meta-trained": evaluate_seen(run, trained)}
      adapted = {name: adapt_unseen(run, s, QUICKSTART_UNSEEN, with_seen=False)
                 for name, s in (("untrained", untrained), ("meta-trained", trained))}
    finally:
      run.close()
  unseen = {name: out["unseen"] for name, out in adapted.items()}
  summary = sparsity_summary(run.learner, trained)
  table = "\n\n".join([
      "seen tasks, after K inner steps on one support batch:\n" + results_table(seen, run.learner.tasks),
      f"unseen tasks, new heads trained for {config.adapt.steps} steps ({config.adapt.train}):\n" +
      results_table(unseen, adapted["meta-trained"]["tasks"]),
      summary["table"]])
  target = f" (target {config.budget.target:.0%} {config.budget.target_kind})" if config.budget.enabled else ""
  print(f"\nmeta-sparsity on synthetic scenes ({config.image_size}², variant {config.variant}): {config.steps} outer "
        f"steps, mode {config.meta.mode}, K = {config.meta.inner_steps}\n\n{table}\n\ngroup sparsity "
        f"{summary['group_sparsity_total']:.1%}{target}, parameter sparsity {summary['param_sparsity']:.1%}, "
        f"backbone FLOPs kept {summary['flops_kept']:.1%}")
  write_results(_WORKDIR.value, "quickstart", {"seen": seen, "unseen": unseen, **summary}, table)


if __name__ == "__main__":
  app.run(main)
