"""The config of an existing run: `--config=experiments/configs/run.py:WORKDIR` is WORKDIR/config.json.

evaluate.py, adapt_unseen.py and export.py use it when --config is not given, so that `--config.KEY=VALUE`
overrides apply to the run's own config.
"""
import ml_collections

from experiments.train import load_config


def get_config(workdir: str) -> ml_collections.ConfigDict:
  return load_config(workdir)
