"""Weights of a torchvision ResNet (its `state_dict`) → the variables of msp's torchvision-style `ResNet`.

The backbone must have `stem="torchvision"` and the torchvision model's blocks and stages, e.g.
`msp.models.presets.BACKBONES["resnet50_torchvision_dilated"]` for `resnet50(replace_stride_with_dilation=[False,
True, True])` (dilation does not change the weights, so an ImageNet ResNet-50 state dict fits it).

Names: `conv1`/`bn1` → `stage0_conv1`; `layer{s}.{b}.conv{i}`/`bn{i}` → `stage{s}_block{b}/conv{i}`;
`layer{s}.{b}.downsample.0`/`.1` → `stage{s}_block{b}/shortcut`. A conv weight (O, I, kh, kw) becomes a kernel
(kh, kw, I, O); BatchNorm `weight`, `bias` become params `norm/scale`, `norm/bias` and `running_mean`, `running_var`
batch_stats `norm/mean`, `norm/var`. The classifier (`fc.*`) and `num_batches_tracked` are not used.

Usage: `variables = import_backbone(variables, load_state_dict("resnet50.pth"), model.backbone)`.
Only `load_state_dict` of a `.pth` file needs PyTorch (a pickled state dict cannot be read without it); it is
imported there, so msp itself never needs torch. Without torch, convert once where torch is installed:
`numpy.savez("resnet50.npz", **{k: v.numpy() for k, v in torch.load("resnet50.pth").items()})`.
"""
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from msp.models.resnet import ResNet

IGNORED = ("fc.weight", "fc.bias")
_MAX_LISTED = 5  # names listed per kind of mismatch (another architecture's state dict misses hundreds)


def torchvision_names(conv: str) -> tuple[str, str]:
  """(conv module, BatchNorm module) in torchvision of a backbone conv path, e.g. "stage2_block0/shortcut" →
  ("layer2.0.downsample.0", "layer2.0.downsample.1")."""
  if conv == "stage0_conv1":
    return "conv1", "bn1"
  block, layer = conv.split("/")
  stage, index = block.removeprefix("stage").split("_block")
  prefix = f"layer{stage}.{index}"
  if layer == "shortcut":
    return f"{prefix}.downsample.0", f"{prefix}.downsample.1"
  return f"{prefix}.{layer}", f"{prefix}.bn{layer.removeprefix('conv')}"


def _listed(names: list[str]) -> str:
  """The first `_MAX_LISTED` of `names`, and how many there are when that is more."""
  more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
  return f"{names[:_MAX_LISTED]}{more}"


def backbone_variables(state_dict: Mapping[str, Any], backbone: ResNet) -> dict:
  """{"params", "batch_stats"} of `backbone` from a torchvision state dict (name → numpy array or CPU tensor).

  Raises ValueError when the backbone has no torchvision counterpart, or naming the missing, unused or misshapen
  entries (every entry but the classifier and `num_batches_tracked` must be used, as torch's strict loading).
  """
  if backbone.stem != "torchvision":
    raise ValueError(f"only a backbone with stem='torchvision' has torchvision weights, not stem={backbone.stem!r}")
  abstract = jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  entries = {}  # (collection, conv path, leaf) → state dict name
  for conv in backbone.channel_sources()[0]:
    conv_name, norm_name = torchvision_names(conv)
    entries["params", conv, "conv", "kernel"] = f"{conv_name}.weight"
    for collection, leaf, name in (("params", "scale", "weight"), ("params", "bias", "bias"),
                                   ("batch_stats", "mean", "running_mean"), ("batch_stats", "var", "running_var")):
      entries[collection, conv, "norm", leaf] = f"{norm_name}.{name}"
  missing = sorted(name for name in entries.values() if name not in state_dict)
  unused = sorted(set(state_dict) - set(entries.values()) - set(IGNORED)
                  - {name for name in state_dict if name.endswith(".num_batches_tracked")})
  if missing or unused:
    raise ValueError(f"the state dict does not fit the backbone: missing {_listed(missing)}, unused "
                     f"{_listed(unused)}")
  variables = {"params": {}, "batch_stats": {}}
  for (collection, conv, *leaf_path), name in entries.items():
    value = np.asarray(state_dict[name], np.float32)
    if leaf_path[-1] == "kernel":
      value = value.transpose(2, 3, 1, 0)
    node, expected = variables[collection], abstract[collection]
    for part in [*conv.split("/"), *leaf_path[:-1]]:
      node, expected = node.setdefault(part, {}), expected[part]
    expected = expected[leaf_path[-1]]
    if value.shape != expected.shape:
      raise ValueError(f"{name}: shape {value.shape} (as {'/'.join([conv, *leaf_path])}) but the backbone expects "
                       f"{expected.shape}")
    node[leaf_path[-1]] = jnp.asarray(value, expected.dtype)
  return variables


def import_backbone(variables: dict, state_dict: Mapping[str, Any], backbone: ResNet) -> dict:
  """`variables` ({"params", "batch_stats"} of a `MultiTaskNet`) with the backbone's taken from `state_dict`."""
  return replace_backbone(variables, backbone_variables(state_dict, backbone))


def replace_backbone(variables: dict, backbone: dict) -> dict:
  """`variables` ({"params", "batch_stats"} of a `MultiTaskNet`) with `backbone`'s (`backbone_variables`)."""
  return {**variables, **{collection: {**variables[collection], "backbone": backbone[collection]}
                          for collection in ("params", "batch_stats")}}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A saved state dict → {name: numpy array}: `.npz` with numpy alone, `.pth`/`.pt` with torch
  (`torch.load(..., weights_only=True)`, so the file cannot run code; tensors become float32)."""
  if os.path.splitext(path)[1] == ".npz":
    with np.load(path) as data:
      return {name: data[name] for name in data.files}
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError(f"reading {path} needs PyTorch (pip install torch), or convert it to .npz where torch is "
                      "installed (see msp.models.torchvision_import)") from None
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  return {name: tensor.detach().float().numpy() for name, tensor in state_dict.items()}
