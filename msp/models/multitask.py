"""The multi-task network: one shared backbone, one head per task (hard parameter sharing)."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from msp.models.heads import HEADS
from msp.models.resnet import ResNet


class MultiTaskNet(nn.Module):
  """(B, H, W, 3) images → {task name: raw output}; dense tasks give (B, H, W, C), attribute tasks (B, C).

  `heads` is a tuple of (task name, head kind in `HEADS`, output channels). Parameters live under `backbone/...`
  (the shared θ, what sparsity acts on) and `head_<task>/...` (the task-specific φ_t). Each head's width is
  `head_width` unless `head_widths` (pairs of head kind, width) names its kind.
  `model.apply(variables, x, train)` is a pure function; with `train=True` pass `mutable=["batch_stats"]`.
  """
  backbone: ResNet
  heads: Sequence[tuple[str, str, int]]
  head_width: int = 32
  head_widths: tuple[tuple[str, int], ...] = ()

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    features = self.backbone(images, train)
    outputs = {}
    for name, kind, channels in self.heads:
      if kind not in HEADS:
        raise ValueError(f"task {name!r}: unknown head kind {kind!r}; choose one of {sorted(HEADS)}")
      width = dict(self.head_widths).get(kind, self.head_width)
      head = HEADS[kind](channels, width, self.backbone.activation, dtype=self.backbone.dtype, name=f"head_{name}")
      outputs[name] = head(features, images.shape[1:3], train)
    return outputs
