r"""The whole method on the embedded synthetic scenes, in one command (what `make quickstart` runs).

python experiments/quickstart.py [--workdir=runs/quickstart] [--config=experiments/configs/synthetic.py:budget]

Builds the dataset (first run only), meta-trains in budget mode (resuming if the workdir has a checkpoint),
scores the seen tasks by the evaluation protocol (`msp.train.evaluation`), adapts a new head to the unseen
edge-detection task, and prints one table against the untrained network put through the same protocol.
`experiments/reports/seed_variation.py` runs the same for several seeds.
"""
from absl import flags

from experiments.run import script
from experiments.run.end_to_end import quickstart
from msp.train.evaluation import write_results

_CONFIG = script.define_config("experiments/configs/synthetic.py:budget", "Run configuration: file[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Directory for checkpoints, logs and results.")


def main(argv):
  script.start(argv)
  with script.clear_errors():
    out = quickstart(_CONFIG.value, _WORKDIR.value)
  print("\n" + out["table"])
  write_results(_WORKDIR.value, "quickstart", {k: out[k] for k in ("seen", "unseen", "summary")}, out["table"])


if __name__ == "__main__":
  script.run(main)
