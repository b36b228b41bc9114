"""The config of an existing run: `--config=experiments/configs/finished_run.py:WORKDIR` is WORKDIR/config.json.

evaluate.py, adapt_unseen.py and export.py use it when --config is not given, so that `--config.KEY=VALUE`
overrides apply to the run's own config. JSON keeps no types, so a key the run left at None (`adapt.tasks`,
`eval.max_examples`, ...) takes its type from the schema's defaults (msp.train.config): it can then be overridden
from the command line like any other key.
"""
import ml_collections

from experiments.run.training import load_config
from msp.train.config import SCHEMA, defaults


def _typed_nones(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
  """Replaces each None leaf of `config` whose key is a typed FieldReference in `defaults` by a copy of it."""
  for key in list(config.keys()):
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict) and isinstance(defaults.get(key), ml_collections.ConfigDict):
      _typed_nones(value, defaults[key])
    elif value is None and key in defaults and defaults.get_type(key) is not type(None):
      config[key] = ml_collections.FieldReference(None, field_type=defaults.get_type(key))


def get_config(workdir: str) -> ml_collections.ConfigDict:
  config = load_config(workdir)
  _typed_nones(config, defaults(*SCHEMA))
  return config
