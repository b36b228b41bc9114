import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Reuse compiled XLA programs across test processes and scripts (see the Makefile); set before jax is imported.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax"))

import jax  # pylint: disable=wrong-import-position
import pytest

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
