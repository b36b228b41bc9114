"""What the experiment scripts share: parsing their flags, reading a run's config, the compile cache, and one clear
line for a user's mistake."""
import contextlib
import functools
import logging as py_logging
import os
import re
import sys
from typing import Callable

import jax
from absl import flags, logging
from ml_collections import config_flags

from msp import cli
from msp.cli import fail
from msp.parallel import processes
from msp.train import ConfigError
from msp.train.config import may_differ_on_resume
from msp.train.files import os_reason
from experiments.run.training import load_config

# `--config=RUN_CONFIG:WORKDIR` is WORKDIR/config.json: what the scripts that read a finished run use without --config.
RUN_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "finished_run.py")
# XLA programs compiled once are reused by later processes; $JAX_COMPILATION_CACHE_DIR replaces this directory.
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "msp", "jax")


def run(main: Callable, workdir_of: Callable[[], str] | None = None) -> None:
  """`msp.cli.run(main)`, with every flag error (unknown flag or config key, missing or broken config file, bad value)
  ending as one line through `fail`.

  `workdir_of` (scripts that read a finished run) returns the run directory the parsed flags name: without --config
  the config is that run's config.json, and --config.KEY=VALUE overrides apply to it; either way only keys a
  resumed run may change (`resume` in msp.train.config.SCHEMA) may be overridden.
  """
  cli.run(main, flags_parser=functools.partial(_parse_flags, workdir_of=workdir_of))


def _parse_flags(argv: list[str], workdir_of: Callable[[], str] | None) -> list[str]:
  typed = list(sys.argv)
  try:
    return _parse(argv, workdir_of)
  finally:
    sys.argv = typed  # what the user typed, as reports record it


def _parse(argv: list[str], workdir_of: Callable[[], str] | None) -> list[str]:
  with _one_line_errors(argv):
    if workdir_of is not None and not any(re.match(r"-{1,2}config(=|$)", arg) for arg in argv[1:]):
      flags.FLAGS(argv, known_only=True)  # only to learn the workdir; the overrides are parsed below
      workdir = workdir_of()
      load_config(workdir)  # its own error, before config_flags would wrap it in a traceback
      # config_flags reads the overrides from sys.argv
      argv = sys.argv = [argv[0], f"--config={RUN_CONFIG}:{workdir}", *argv[1:]]
    remaining = flags.FLAGS(argv)
    config = flags.FLAGS["config"].value if _is_config_file_flag() else None
    if config is not None:
      config.get("seed")  # a config file that failed to load raises its OSError on first access
    if workdir_of is not None:
      refused = [key for key in config_flags.get_override_values(flags.FLAGS["config"])
                 if not may_differ_on_resume(key)]
      if refused:
        fail(f"--config.{refused[0]}: the run's checkpoints depend on it, so it cannot be overridden here (only "
             f"logging, evaluation and adaptation keys can: eval.*, adapt.*, ...)")
    return remaining


@contextlib.contextmanager
def _one_line_errors(argv: list[str]):
  """A bad flag, config file, config key or value in `argv` ends the script through `fail`."""
  try:
    yield
  except ConfigError as e:
    fail(str(e))
  except (AttributeError, KeyError) as e:  # an override of a key the config lacks
    fail(_unknown_key_message(str(e), argv))
  except OSError as e:
    path = _config_arg(argv).split(":", 1)[0]
    fail(f"--config={path}: no such file" if not os.path.exists(path) else f"--config={path}: {e}")
  except flags.Error as e:
    fail(cli.flag_error_message(str(e)))
  except Exception as e:  # pylint: disable=broad-except
    path = _config_arg(argv).split(":", 1)[0]
    line = _line_in_file(e, path) if path else None
    if line is None:
      raise
    fail(f"--config={path}: line {line}: {type(e).__name__}: {getattr(e, 'msg', None) or e}")


def _line_in_file(error: BaseException, path: str) -> int | None:
  """The line of `path` (a config file) where `error` was raised or failed to compile; None if it did not arise
  there (then it is msp's own error, and its traceback is kept)."""
  target = os.path.realpath(path)
  if isinstance(error, SyntaxError) and error.filename and os.path.realpath(error.filename) == target:
    return error.lineno
  line, tb = None, error.__traceback__
  while tb is not None:
    if os.path.realpath(tb.tb_frame.f_code.co_filename) == target:
      line = tb.tb_lineno
    tb = tb.tb_next
  return line


def define_config(default: str, help_text: str, lock_config: bool = True):
  """--config with a default config file. config_flags loads a default at once, applying the command line's
  --config.KEY=VALUE overrides, so that their errors (an unknown key, a bad value) end the script here, as one
  line."""
  with _one_line_errors(sys.argv):
    holder = config_flags.DEFINE_config_file("config", default, help_text, lock_config=lock_config)
  flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["config"])  # the script's --help lists it
  return holder


def _is_config_file_flag() -> bool:
  """Whether the script's --config is a config file (config_flags), not a plain flag of that name."""
  if "config" not in flags.FLAGS:
    return False
  try:
    config_flags.get_config_filename(flags.FLAGS["config"])  # TypeError for any other flag
  except TypeError:
    return False
  return True


def _config_arg(argv: list[str]) -> str:
  """The value of --config in `argv` (`--config=X` or `--config X`)."""
  for i, arg in enumerate(argv):
    if match := re.match(r"-{1,2}config(=|$)", arg):
      return arg[match.end():] if match[1] else (argv[i + 1] if i + 1 < len(argv) else "")
  return ""


def _unknown_key_message(error: str, argv: list[str]) -> str:
  """`--config.a.b: the config has no key 'b'; did you mean 'c'?` from ConfigDict's KeyError text."""
  suggestion = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', error)
  key = suggestion[2] if suggestion else re.search(r"\w+", error)[0]
  given = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--config.")]
  where = next((arg for arg in given if key in arg.split(".")), "--config")
  return f"{where}: the config has no key {key!r}" + (f"; did you mean {suggestion[1]!r}?" if suggestion else "")


# TFDS warnings printed on every run that are not about the user's setup: msp's builders name their configs
# themselves, and PIL decodes the PNGs.
_TFDS_NOTES = ("Using custom data configuration", "OpenCV is not installed")


class _DropTfdsNotes(py_logging.Filter):
  def filter(self, record: py_logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_TFDS_NOTES)


# Defined here rather than in each script: every script takes it, and this module is imported once per process.
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", processes.MODES, "Start JAX's distributed runtime, for a job of several processes: auto "
    "(when JAX_COORDINATOR_ADDRESS is set, a SLURM step has several tasks, or on a Cloud TPU VM), on, or off.")


def start(argv) -> None:
  """Refuses stray arguments, starts JAX's distributed runtime when the job spans several processes (--distributed;
  each process then prints one line on stderr naming itself and its devices), keeps the console to warnings (orbax
  logs every checkpoint step at INFO) without TFDS's routine notes (_TFDS_NOTES), and turns on the persistent
  compile cache (DEFAULT_CACHE_DIR unless $JAX_COMPILATION_CACHE_DIR names one)."""
  cli.start(argv)
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(_DropTfdsNotes())
  if processes.initialize(_DISTRIBUTED.value if flags.FLAGS.is_parsed() else _DISTRIBUTED.default):
    print(processes.describe(), file=sys.stderr, flush=True)
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(DEFAULT_CACHE_DIR))


@contextlib.contextmanager
def clear_errors():
  """A bad config value, path or checkpoint ends the script with its one-line message (exit status 2); so does a
  file that cannot be read or written (naming the file and the operating system's reason)."""
  try:
    yield
  except ConfigError as e:
    fail(str(e))
  except OSError as e:
    fail(f"cannot {'read or write' if e.filename else 'write'} {e.filename or 'a file'}: {os_reason(e)}")


def define_optional_config():
  """--config for scripts that read a finished run: default the run's own config.json."""
  return config_flags.DEFINE_config_file(
      "config", None, "Run configuration (file[:variant]); default: WORKDIR/config.json. --config.KEY=VALUE "
      "overrides keys outside those the checkpoint depends on (eval.*, adapt.*, ...).", lock_config=True)


def run_config(config_flag, workdir: str):
  """--config (which `run` defaults to the run's config.json) once `workdir` is known to hold a run (ConfigError
  otherwise): opening a run must not create one."""
  load_config(workdir)
  return config_flag.value
