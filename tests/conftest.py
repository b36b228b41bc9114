import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Reuse compiled XLA programs across test processes and scripts (see the Makefile); set before jax is imported.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax"))

import jax  # pylint: disable=wrong-import-position
import pytest
from etils import epath

if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


@pytest.fixture
def x64():
  """Runs a test with float64 enabled (finite-difference checks), restoring the previous setting after."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A tfds data directory per test module (the tiny configs render synthetic_scenes into it on first use)."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def store(tmp_path):
  """A fake gs:// object store under tmp_path/store; yields that directory."""
  root = tmp_path / "store"
  root.mkdir()
  local = lambda p: str(root / os.fspath(p)[len("gs://"):]) if os.fspath(p).startswith("gs://") else os.fspath(p)
  uri = lambda p: "gs://" + os.path.relpath(p, root) if p.startswith(str(root)) else p
  one = lambda fn, path, *args, **kwargs: fn(local(path), *args, **kwargs)
  two = lambda fn, path, dst, *args, **kwargs: fn(local(path), local(dst), *args, **kwargs)
  glob = lambda fn, pattern: [uri(p) for p in fn(local(pattern))]

  def open_(fn, path, mode, *args, **kwargs):  # an object store has no directories to create first
    if set(mode) & set("wa"):
      os.makedirs(os.path.dirname(local(path)), exist_ok=True)
    return fn(local(path), mode, *args, **kwargs)

  with epath.testing.mock_epath(open=open_, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, remove=one,
                                rmtree=one, stat=one, walk=one, rename=two, replace=two, copy=two, glob=glob):
    yield root
  assert not os.path.exists("gs:"), "a gs:// path was written as a local relative path"
