"""What every command line of the repository shares (absl flags): a user's mistake ends the command with one
`error: ...` line on stderr and exit status 2.

A command defines its flags in its own module (the one run as `__main__`; never in a module that others import:
absl flags are process-global), and ends with `cli.run(main)`; `main(argv)` calls `cli.start(argv)` first.
experiments/run/script.py builds the scripts' config-file handling on these.
"""
import os
import re
import sys
from typing import Callable, NoReturn, Sequence

from absl import app, flags


def fail(message) -> NoReturn:
  """Ends the command with `error: message` as one line on stderr (a multi-line message is joined), exit status 2.

  The process ends at once (os._exit, after flushing): orbax's background threads may still be reading a damaged
  checkpoint, and an interpreter shutdown would let them print tracebacks after the line. Callers release what they
  hold (runs, checkpointers, log writers) before an error reaches here, in their `finally` blocks."""
  print("error: " + " ".join(line.strip() for line in str(message).splitlines() if line.strip()), file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(2)  # pylint: disable=protected-access


def flag_error_message(error: str) -> str:
  """absl's message of a flag error as one line; where a flag's parser raised with a traceback (a config file that
  failed to load), the flag and the exception's own last line."""
  if "Traceback" not in error:
    return error
  flag = error.split(": Error whilst parsing config file", 1)[0].removeprefix("flag ")
  last = [line for line in error.splitlines() if line.strip()][-1].strip()
  return f"{flag}: {re.sub(r'^[A-Za-z]*Error: ', '', last)}"


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """`flag_values(argv)`: the arguments left after the flags; an unknown flag, a bad or missing value ends the command
  through `fail`."""
  try:
    return flag_values(list(argv))
  except flags.Error as e:
    fail(flag_error_message(str(e)))


def run(main: Callable[[list[str]], object], flags_parser: Callable[[list[str]], list[str]] = parse_flags) -> None:
  """`absl.app.run(main)` with every flag error as one line (`parse_flags`, or a command's own `flags_parser` that
  does the same)."""
  app.run(main, flags_parser=flags_parser)


def start(argv: Sequence[str]) -> None:
  """Refuses stray arguments (what is left of the command line after the flags)."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {list(argv[1:])}")
