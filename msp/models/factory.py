"""Builds the multi-task network from a config section."""
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import ml_collections

from msp.models.multitask import MultiTaskNet
from msp.models.resnet import ResNet


def backbone_from_fields(fields: Mapping[str, Any], dtype: jnp.dtype = jnp.float32) -> ResNet:
  """The `ResNet` of `fields` (`config.model.backbone`: its fields, sequences as lists or tuples, as config.json
  gives them back; `conv_widths` optional, as [conv path, width] pairs)."""
  backbone = dict(fields)
  for key in ("depths", "widths", "strides", "dilations"):
    backbone[key] = tuple(backbone[key])
  backbone["conv_widths"] = tuple((str(path), int(width)) for path, width in backbone.get("conv_widths", ()))
  return ResNet(**backbone, dtype=dtype)


def build_model(model_config: ml_collections.ConfigDict, tasks: Sequence["msp.tasks.Task"]) -> MultiTaskNet:
  """`model_config` is a run config's `model` section (msp.train.config.SCHEMA, docs/configuration.md): `backbone`
  (the `ResNet` fields), `head_width`, `dtype`, `head_kinds` and `head_widths`; one head per task.

  `backbone.conv_widths` (a pruned network's, as `msp.export` writes it) may be a list of [conv path, width] pairs.
  `head_kinds` maps a task's head role (`Task.head`: "dense", "attribute") to the head kind in `HEADS` that serves it
  (a role it does not name: the role itself), e.g. {"dense": "aspp"}; `head_widths` maps a head kind to its width
  (a kind it does not name: `head_width`).
  """
  dtype = jnp.dtype(model_config.dtype)
  kinds = dict(model_config.head_kinds)
  return MultiTaskNet(
      backbone=backbone_from_fields(model_config.backbone, dtype),
      heads=tuple((t.name, kinds.get(t.head, t.head), t.channels) for t in tasks),
      head_width=model_config.head_width,
      head_widths=tuple((str(kind), int(width)) for kind, width in model_config.head_widths.items()))
