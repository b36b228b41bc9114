"""Builds the multi-task network from a config section."""
from typing import Sequence

import jax.numpy as jnp
import ml_collections

from msp.models.multitask import MultiTaskNet
from msp.models.resnet import ResNet


def build_model(model_config: ml_collections.ConfigDict, tasks: Sequence["msp.tasks.Task"]) -> MultiTaskNet:
  """`model_config` holds `backbone` (the `ResNet` fields), `head_width` and `dtype`; one head per task."""
  backbone = dict(model_config.backbone)
  for key in ("depths", "widths", "strides", "dilations"):
    backbone[key] = tuple(backbone[key])
  dtype = jnp.dtype(model_config.get("dtype", "float32"))
  return MultiTaskNet(
      backbone=ResNet(**backbone, dtype=dtype),
      heads=tuple((t.name, t.head, t.channels) for t in tasks),
      head_width=model_config.head_width)
