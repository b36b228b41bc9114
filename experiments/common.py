"""What the experiment scripts share: reading a run's config, and one clear line for a user's mistake."""
import contextlib
import sys

from absl import app, logging
from ml_collections import config_flags

from msp.train import ConfigError
from experiments.train import load_config


def start(argv) -> None:
  """Refuses stray arguments and keeps the console to warnings (orbax logs every checkpoint step at INFO)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def clear_errors():
  """A bad config value, path or checkpoint ends the script with its one-line message (exit status 2)."""
  try:
    yield
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def define_optional_config():
  """--config for scripts that read a finished run: default the run's own config.json."""
  return config_flags.DEFINE_config_file(
      "config", None, "Run configuration (file[:variant]); default: WORKDIR/config.json. Keys outside those the "
      "checkpoint depends on (eval.*, adapt.*) may be overridden.", lock_config=True)


def run_config(config_flag, workdir: str):
  return config_flag.value if config_flag.value is not None else load_config(workdir)
