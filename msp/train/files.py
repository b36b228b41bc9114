"""A run's files: where they live, and writing them.

Every path of a run (its workdir, a data directory, an export) goes through `as_path`: an `etils.epath.Path`, which
is a local path or an object-store URI (`gs://`, `s3://`; reading and writing those needs the store's fsspec
package, e.g. gcsfs). Any failed write (a full disk, a read-only mount, a quota) becomes one WriteError that names
the path and the operating system's reason, and small files are replaced whole or not at all. In a multi-process job
the processes share the run directory and process 0 alone writes its small files."""
import contextlib
import glob as globlib
import os
import re
from typing import Iterator

from etils import epath

from msp.parallel import is_primary
from msp.train.config import ConfigError


def as_path(path: str | os.PathLike) -> epath.Path:
  """`path` as an epath.Path: a URI (`gs://bucket/run`) as it is, a local path with `~` expanded."""
  text = os.fspath(path)
  return epath.Path(text if is_remote(text) else os.path.expanduser(text))


def absolute(path: str | os.PathLike) -> str:
  """`path` as an absolute path (a URI normalised, without a trailing slash), for records that must still name it
  from another directory."""
  return os.fspath(as_path(path)) if is_remote(path) else os.path.abspath(os.path.expanduser(os.fspath(path)))


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is an object-store URI (`scheme://...`) rather than a local (or mounted) path."""
  return "://" in os.fspath(path)


def glob(pattern: str) -> list[str]:
  """The paths `pattern` matches (`*`, `?`, `[...]` within a part, `**` across parts), local or in a bucket."""
  if not is_remote(pattern):
    return globlib.glob(os.path.expanduser(pattern), recursive=True)
  parts = pattern.split("/")
  fixed = next((i for i, part in enumerate(parts) if globlib.has_magic(part)), len(parts))
  base = "/".join(parts[:fixed])
  if fixed == len(parts):
    return [base] if as_path(base).exists() else []
  return [os.fspath(p) for p in as_path(base).glob("/".join(parts[fixed:]))]


class WriteError(ConfigError):
  """A file of a run could not be written; the message names the path and the reason."""


def os_reason(error: OSError) -> str:
  """The operating system's words for `error` ("No space left on device"), else its message."""
  return os.strerror(error.errno) if error.errno else (str(error) or type(error).__name__)


_OS_ERROR = re.compile(r"(?:\[OS error |\[Errno |os_error_code=')(\d+)")


def error_reason(error: BaseException, limit: int = 200) -> str:
  """The first line of an error's message, at most `limit` characters (orbax's messages run to kilobytes), led by
  the operating system's reason where the error or one it was raised from names one ("No space left on device")."""
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  text = text if len(text) <= limit else text[:limit] + "…"
  cause = error
  while cause is not None:
    if isinstance(cause, OSError) and cause.errno:
      return f"{os_reason(cause)} ({text})"
    if match := _OS_ERROR.search(str(cause)):
      return f"{os.strerror(int(match[1]))} ({text})"
    cause = cause.__cause__ or cause.__context__
  return text


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
  """Turns an OSError raised inside the block into WriteError("cannot write PATH: REASON").

  Writes to an open file (`f.write`) raise OSErrors without a file name; this puts the path back."""
  try:
    yield
  except OSError as e:
    raise WriteError(f"cannot write {os.fspath(path)}: {os_reason(e)}") from e


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` through a temporary sibling and a rename, so that `path` is never half-written;
  WriteError naming `path` when that fails (the temporary file is removed). In a multi-process job every process
  calls it with the same text and process 0 writes."""
  if not is_primary():
    return
  path = as_path(path)
  tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
  with writing(path):
    try:
      tmp.write_text(text, encoding="utf-8")
      tmp.replace(path)
    finally:
      if tmp.exists():
        tmp.unlink()
