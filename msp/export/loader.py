"""Runs an exported network with jax alone: no Flax, no msp training code.

This module imports only the standard library, numpy and jax, so that a deployment needs none of msp's other
dependencies; keep it that way. What `load` needs installed is `REQUIREMENTS` (tests/test_export.py runs it in an
interpreter that can import nothing else and checks that it imports each of them).
"""
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# The files of an export directory (written by `msp.export.artifact.write_artifact`).
INFERENCE_FILE = "inference.jax_exported"  # jax.export serialization of images → {task: output}
SPEC_FILE = "spec.json"  # architecture, kept channels, input and outputs
CHECKPOINT_DIR = "checkpoint"  # orbax checkpoint of the pruned {"params", "batch_stats"}

# The distributions `load` imports outside the standard library, pinned as requirements.lock pins them: jax and
# what importing jax imports (jaxlib, numpy, ml_dtypes, opt_einsum, scipy; `pip install jax` brings these), and
# flatbuffers, which `jax.export.deserialize` needs but jax does not install.
REQUIREMENTS = ("jax==0.10.2", "jaxlib==0.10.2", "numpy==2.4.6", "ml_dtypes==0.6.0", "opt_einsum==3.4.0",
                "scipy==1.17.1", "flatbuffers==25.12.19")


def load_spec(path: str) -> dict:
  """The export's spec.json as a dict (see `msp.export.artifact.write_artifact` for its keys)."""
  with open(os.path.join(path, SPEC_FILE), encoding="utf-8") as f:
    return json.load(f)


def load(path: str) -> Callable[[np.ndarray | jax.Array], dict[str, jax.Array]]:
  """The exported inference function of the export directory `path`, compiled on first call per batch size.

  The returned function maps float32 images (B, H, W, 3) in [0, 1], any batch size B and H = W = the spec's
  `image_size`, to {task name: raw output}: (B, H, W, C) for dense tasks, (B, C) for attribute tasks, float32.
  BatchNorm uses its running averages (inference mode).
  """
  with open(os.path.join(path, INFERENCE_FILE), "rb") as f:
    return inference_function(f.read())


def inference_function(serialized: bytes) -> Callable[[np.ndarray | jax.Array], dict[str, jax.Array]]:
  """The function `load` returns, from the bytes of an export's inference.jax_exported."""
  call = jax.jit(jax.export.deserialize(bytearray(serialized)).call)
  return lambda images: call(jnp.asarray(images, jnp.float32))
