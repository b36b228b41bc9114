"""The export directory: the pruned network as a jax.export function, an orbax checkpoint and its spec.

Files (names in `msp.export.loader`):
  inference.jax_exported  `jax.export` serialization of images (b, H, W, 3) float32 in [0, 1] → {task: output},
                          b symbolic, weights inside; `msp.export.load(dir)` runs it with jax alone
                          (the packages of spec.json's `requirements`).
  checkpoint/             orbax checkpoint of {"params", "batch_stats"} of the pruned network.
  spec.json               the pruned architecture and what it was made from:
    model          the config's `model` section with the pruned `backbone.conv_widths` ([conv path, width] pairs),
                   so `msp.models.build_model` rebuilds the Flax module (see `model_from_spec`);
    heads          [task, head kind, output channels] per task;
    image_size     H = W of the exported function's input;
    outputs        task → {"kind", "shape"} with "b" for the batch dimension;
    kept_channels  conv path → the dense network's indices of its kept output channels;
    dense_widths   conv path → its output channels in the dense network;
    platforms      the platforms the function was lowered for;
    source         where the dense network came from (e.g. workdir and step);
    requirements   the pinned packages that `msp.export.load` needs (`msp.export.loader.REQUIREMENTS`).
"""
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from orbax.checkpoint import v1 as ocp

from msp.export.loader import CHECKPOINT_DIR, INFERENCE_FILE, REQUIREMENTS, SPEC_FILE, load_spec
from msp.export.prune import PrunePlan
from msp.models import MultiTaskNet, build_model
from msp.parallel import is_primary, make_mesh, replicate, sync
from msp.train.files import absolute, as_path, write_text_atomic, writing


class _Head(NamedTuple):
  """What `build_model` reads of a task."""
  name: str
  head: str
  channels: int


def serialize_inference(model: MultiTaskNet, variables: dict, image_size: int,
                        platforms: tuple[str, ...] | None = None) -> bytearray:
  """`jax.export` bytes of images (b, image_size, image_size, 3) → model outputs in inference mode, b symbolic.

  platforms: the platforms to lower for (e.g. ("cpu", "cuda")); None: this machine's default backend.
  """
  forward = jax.jit(lambda images: model.apply(variables, images, train=False))
  images = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {image_size}, {image_size}, 3"), jnp.float32)
  return jax.export.export(forward, platforms=platforms)(images).serialize()


def spec_dict(model: MultiTaskNet, model_config: dict, plan: PrunePlan, image_size: int,
              platforms: tuple[str, ...], source: dict) -> dict:
  """spec.json's content for `model` (pruned by `plan`) built from `model_config` (the dense config's `model`)."""
  outputs = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False)[0])
  backbone = {**model_config["backbone"], "conv_widths": [list(pair) for pair in model.backbone.conv_widths]}
  return {
      "model": {**model_config, "backbone": backbone},
      "heads": [list(head) for head in model.heads],
      "image_size": image_size,
      "outputs": {task: {"kind": kind, "shape": ["b", *outputs[task].shape[1:]]} for task, kind, _ in model.heads},
      "kept_channels": {conv: kept.tolist() for conv, kept in plan.kept.items()},
      "dense_widths": plan.dense,
      "platforms": list(platforms),
      "source": source,
      "requirements": list(REQUIREMENTS),
  }


def write_artifact(out: str | os.PathLike, spec: dict, variables: dict, serialized: bytearray) -> None:
  """Writes spec.json, the orbax checkpoint of `variables` and the serialized function into `out` (a directory or
  a bucket URI; created if missing; files of an earlier export there are replaced). In a multi-process job every process calls it and
  returns once all files are written."""
  out = as_path(absolute(out))  # orbax refuses relative paths
  with writing(out):
    out.mkdir(parents=True, exist_ok=True)
  if jax.process_count() > 1:  # every process calls this; orbax writes a global array once
    variables = replicate(variables, make_mesh())
  ocp.save(out / CHECKPOINT_DIR, variables, overwrite=True)
  if is_primary():
    with writing(out / INFERENCE_FILE):
      (out / INFERENCE_FILE).write_bytes(bytes(serialized))
    write_text_atomic(out / SPEC_FILE, json.dumps(spec, indent=1))
  sync("export files written")  # the other processes read them next


def model_from_spec(spec: dict) -> MultiTaskNet:
  """The pruned Flax module that an export's spec describes."""
  return build_model(ml_collections.ConfigDict(spec["model"]), [_Head(*head) for head in spec["heads"]])


def restore(path: str) -> tuple[MultiTaskNet, dict]:
  """(Flax module, {"params", "batch_stats"}) of the export directory `path`, for use with `module.apply`."""
  spec = load_spec(path)
  model = model_from_spec(spec)
  size = spec["image_size"]
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)))
  return model, ocp.load(os.path.join(os.path.abspath(path), CHECKPOINT_DIR), abstract)
