"""Importing torchvision ResNet weights: the name mapping (numpy only) and equality with PyTorch forwards of the
same weights, for the dilated ResNet-50 backbone and the ASPP head (DeepLabHead). The PyTorch references are written
with torch ops here (NCHW), so they need torch alone (requirements-test.lock); without it those two are skipped."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp.models import ASPPHead, ResNet
from msp.models.presets import BACKBONES
from msp.models.torchvision_import import backbone_variables, import_backbone, load_state_dict

SMALL = ResNet(block="bottleneck", stem="torchvision", stem_width=4, depths=(1, 2), widths=(2, 4), strides=(1, 2),
               dilations=(1, 1))


def _add_conv_norm(rng, state, conv, norm, shape):
  """Adds a random conv weight of `shape` (O, I, kh, kw) ~ N(0, 1/fan_in) at `{conv}.weight`, so that activations
  stay O(1) through ResNet-50's 53 convs, and its BatchNorm at `{norm}.*`: weight U(0.5, 1.5), bias and running_mean
  U(-0.2, 0.2), running_var U(0.5, 1.5) (non-trivial, so that their mapping is checked too)."""
  state[f"{conv}.weight"] = rng.normal(scale=np.prod(shape[1:]) ** -0.5, size=shape).astype(np.float32)
  for leaf, (low, high) in (("weight", (0.5, 1.5)), ("bias", (-0.2, 0.2)), ("running_mean", (-0.2, 0.2)),
                            ("running_var", (0.5, 1.5))):
    state[f"{norm}.{leaf}"] = rng.uniform(low, high, size=shape[0]).astype(np.float32)


def _fake_state_dict(rng, backbone=SMALL, classes=10):
  """A torchvision-named state dict with random entries (see `_add_conv_norm`) for a torchvision-style bottleneck
  `backbone` (SMALL, or ResNet-50), in PyTorch layouts, with the classifier (`fc.*`) and `num_batches_tracked`
  entries that the import ignores. Downsampling shortcuts where torchvision has them: a stage's first block when its
  stride or its channel count changes."""
  state = {}
  _add_conv_norm(rng, state, "conv1", "bn1", (backbone.stem_width, 3, 7, 7))
  channels = backbone.stem_width
  for s, (depth, width, stride) in enumerate(zip(backbone.depths, backbone.widths, backbone.strides), start=1):
    for b in range(depth):
      prefix = f"layer{s}.{b}"
      for i, shape in enumerate([(width, channels, 1, 1), (width, width, 3, 3), (4 * width, width, 1, 1)], start=1):
        _add_conv_norm(rng, state, f"{prefix}.conv{i}", f"{prefix}.bn{i}", shape)
      if b == 0 and (stride != 1 or channels != 4 * width):
        _add_conv_norm(rng, state, f"{prefix}.downsample.0", f"{prefix}.downsample.1", (4 * width, channels, 1, 1))
      channels = 4 * width
  norms = [name.removesuffix(".running_var") for name in state if name.endswith(".running_var")]
  state.update({f"{norm}.num_batches_tracked": np.array(3) for norm in norms})
  state.update({"fc.weight": np.zeros((classes, channels), np.float32), "fc.bias": np.zeros(classes, np.float32)})
  return state


def test_names_and_layouts_map_onto_the_backbone(tmp_path):
  state = _fake_state_dict(np.random.default_rng(0))
  np.savez(tmp_path / "weights.npz", **state)
  variables = backbone_variables(load_state_dict(str(tmp_path / "weights.npz")), SMALL)
  params, stats = variables["params"], variables["batch_stats"]
  np.testing.assert_array_equal(params["stage0_conv1"]["conv"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["stage2_block0"]["shortcut"]["conv"]["kernel"][0, 0],
                                state["layer2.0.downsample.0.weight"][:, :, 0, 0].T)
  np.testing.assert_array_equal(params["stage2_block1"]["conv3"]["norm"]["scale"], state["layer2.1.bn3.weight"])
  np.testing.assert_array_equal(stats["stage1_block0"]["shortcut"]["norm"]["var"],
                                state["layer1.0.downsample.1.running_var"])
  reference = jax.eval_shape(lambda: SMALL.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  assert jax.tree.structure(variables) == jax.tree.structure(reference)
  merged = import_backbone({"params": {"backbone": None, "head": 1}, "batch_stats": {"backbone": None}}, state, SMALL)
  assert merged["params"]["head"] == 1 and merged["params"]["backbone"]["stage0_conv1"]


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("layer2.1.bn2.running_var"), "missing"), (lambda s: s.update(extra=np.zeros(1)), "unused"),
    (lambda s: s.update({"layer1.0.conv2.weight": np.zeros((2, 2, 1, 1))}), "shape")])
def test_mismatches_are_named(edit, message):
  state = _fake_state_dict(np.random.default_rng(0))
  edit(state)
  with pytest.raises(ValueError, match=message):
    backbone_variables(state, SMALL)
  with pytest.raises(ValueError, match="stem='torchvision'"):
    backbone_variables(state, SMALL.clone(stem="deep"))


def _conv_norm(torch, state, x, conv, norm, stride=1, padding=0, dilation=1, relu=True):
  """torch: bias-free conv `{conv}.weight` → BatchNorm `{norm}.*` in eval mode (eps 1e-5) → ReLU (if `relu`);
  x (B, C, H, W)."""
  functional = torch.nn.functional
  weight = lambda name: torch.from_numpy(state[name])
  x = functional.conv2d(x, weight(f"{conv}.weight"), stride=stride, padding=padding, dilation=dilation)
  x = functional.batch_norm(x, weight(f"{norm}.running_mean"), weight(f"{norm}.running_var"),
                            weight(f"{norm}.weight"), weight(f"{norm}.bias"), training=False, eps=1e-5)
  return functional.relu(x) if relu else x


def _torch_resnet50_dilated(torch, state, images):
  """torchvision's `resnet50(replace_stride_with_dilation=[False, True, True])` without avgpool and fc, in torch ops:
  (B, 3, H, W) images → (B, 2048, H/8, W/8) features, from a torchvision-named state dict.

  7×7 conv stride 2 padding 3 → BN → ReLU → 3×3 max-pool stride 2 padding 1; bottleneck blocks (v1.5: the stride on
  the 3×3 conv, whose padding is its dilation), the residual added before the last ReLU. A dilated layer (3, 4) has
  stride 1 and multiplies the dilation by the stride it replaces; its first block keeps the previous layer's dilation
  (torchvision's `previous_dilation`: layer3 1, 2, ...; layer4 2, 4, ...). A block's downsample (1×1 conv with the
  block's stride + BN) exists where the stride or the channel count changes.
  """
  x = _conv_norm(torch, state, images, "conv1", "bn1", stride=2, padding=3)
  x = torch.nn.functional.max_pool2d(x, 3, stride=2, padding=1)
  channels, dilation = 64, 1
  for layer, (depth, width, stride, dilate) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 2),
                                                             (False, False, True, True)), start=1):
    previous_dilation = dilation
    if dilate:
      dilation, stride = dilation * stride, 1
    for b in range(depth):
      prefix, block_stride = f"layer{layer}.{b}", stride if b == 0 else 1
      block_dilation = previous_dilation if b == 0 else dilation
      y = _conv_norm(torch, state, x, f"{prefix}.conv1", f"{prefix}.bn1")
      y = _conv_norm(torch, state, y, f"{prefix}.conv2", f"{prefix}.bn2", stride=block_stride,
                     padding=block_dilation, dilation=block_dilation)
      y = _conv_norm(torch, state, y, f"{prefix}.conv3", f"{prefix}.bn3", relu=False)
      if block_stride != 1 or channels != 4 * width:
        x = _conv_norm(torch, state, x, f"{prefix}.downsample.0", f"{prefix}.downsample.1", stride=block_stride,
                       relu=False)
      x, channels = torch.nn.functional.relu(y + x), 4 * width
  return x


def test_equals_torch_dilated_resnet50():
  torch = pytest.importorskip("torch")
  backbone = ResNet(**BACKBONES["resnet50_torchvision_dilated"])
  state = _fake_state_dict(np.random.default_rng(0), backbone, classes=1000)
  images = np.random.default_rng(1).uniform(size=(2, 48, 48, 3)).astype(np.float32)
  with torch.no_grad():
    expected = _torch_resnet50_dilated(torch, state, torch.from_numpy(images.transpose(0, 3, 1, 2)))
  expected = expected.numpy().transpose(0, 2, 3, 1)
  features = np.asarray(backbone.apply(backbone_variables(state, backbone), images, train=False))
  assert features.shape == expected.shape == (2, 6, 6, 2048)
  difference, scale = np.max(np.abs(features - expected)), np.max(np.abs(expected))
  print(f"ResNet-50: max |flax - torch| = {difference:.3g}, max |torch| = {scale:.3g}")
  assert difference < 1e-4, (difference, scale)


def _torch_deeplab_head(torch, state, features, rates=(12, 24, 36)):
  """torchvision's `DeepLabHead` in eval mode, in torch ops: (B, C, h, w) features → (B, classes, h, w).

  ASPP: a 1×1 conv, three 3×3 convs of dilation = padding = `rates` and image pooling (global average → 1×1 conv),
  each bias-free + BN + ReLU, the pooled branch upsampled bilinearly to h×w (a broadcast of its 1×1 source);
  concatenated → 1×1 projection to 256 + BN + ReLU (dropout: the identity in eval) → 3×3 conv (256, padding 1) +
  BN + ReLU → 1×1 conv with bias to the classes.
  """
  functional = torch.nn.functional
  branches = [_conv_norm(torch, state, features, "0.convs.0.0", "0.convs.0.1")]
  branches += [_conv_norm(torch, state, features, f"0.convs.{i}.0", f"0.convs.{i}.1", padding=rate, dilation=rate)
               for i, rate in enumerate(rates, start=1)]
  pooled = _conv_norm(torch, state, functional.adaptive_avg_pool2d(features, 1), "0.convs.4.1", "0.convs.4.2")
  branches.append(functional.interpolate(pooled, size=features.shape[-2:], mode="bilinear", align_corners=False))
  x = _conv_norm(torch, state, torch.cat(branches, dim=1), "0.project.0", "0.project.1")
  x = _conv_norm(torch, state, x, "1", "2", padding=1)
  return functional.conv2d(x, torch.from_numpy(state["4.weight"]), torch.from_numpy(state["4.bias"]))


def test_aspp_head_equals_torch_deeplab_head():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  state = {}
  for i, k in enumerate((1, 3, 3, 3)):
    _add_conv_norm(rng, state, f"0.convs.{i}.0", f"0.convs.{i}.1", (256, 6, k, k))
  _add_conv_norm(rng, state, "0.convs.4.1", "0.convs.4.2", (256, 6, 1, 1))
  _add_conv_norm(rng, state, "0.project.0", "0.project.1", (256, 5 * 256, 1, 1))
  _add_conv_norm(rng, state, "1", "2", (256, 256, 3, 3))
  state["4.weight"] = rng.normal(scale=256 ** -0.5, size=(3, 256, 1, 1)).astype(np.float32)
  state["4.bias"] = rng.uniform(-0.2, 0.2, size=3).astype(np.float32)
  modules = {"aspp0": ("0.convs.0.0", "0.convs.0.1"), "aspp1": ("0.convs.1.0", "0.convs.1.1"),
             "aspp2": ("0.convs.2.0", "0.convs.2.1"), "aspp3": ("0.convs.3.0", "0.convs.3.1"),
             "aspp_pool": ("0.convs.4.1", "0.convs.4.2"), "project": ("0.project.0", "0.project.1"),
             "decode": ("1", "2")}
  params = {"out": {"kernel": state["4.weight"].transpose(2, 3, 1, 0), "bias": state["4.bias"]}}
  stats = {}
  for ours, (conv, norm) in modules.items():
    params[ours] = {"kernel": state[f"{conv}.weight"].transpose(2, 3, 1, 0)}
    params[f"{ours}_norm"] = {"scale": state[f"{norm}.weight"], "bias": state[f"{norm}.bias"]}
    stats[f"{ours}_norm"] = {"mean": state[f"{norm}.running_mean"], "var": state[f"{norm}.running_var"]}
  # 40×40 (> 36): every tap of each dilated 3×3 kernel meets the image somewhere, so their layouts are checked too
  features = np.random.default_rng(1).normal(size=(2, 40, 40, 6)).astype(np.float32)
  with torch.no_grad():
    expected = _torch_deeplab_head(torch, state, torch.from_numpy(features.transpose(0, 3, 1, 2)))
  expected = expected.numpy().transpose(0, 2, 3, 1)
  out = np.asarray(ASPPHead(3, 256).apply({"params": params, "batch_stats": stats}, features, (40, 40), train=False))
  assert out.shape == expected.shape == (2, 40, 40, 3)
  print(f"ASPP head: max |flax - torch| = {np.max(np.abs(out - expected)):.3g}, "
        f"max |torch| = {np.max(np.abs(expected)):.3g}")
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _init_from_config(path, backbone=SMALL):
  """synthetic.py:budget,tiny with the torchvision-style `backbone` and `model.init_from=path`."""
  from experiments.configs import synthetic
  config = synthetic.get_config("budget,tiny")
  config.model.backbone = {field: getattr(backbone, field) for field in (
      "block", "stem", "stem_width", "depths", "widths", "strides", "dilations", "dilate_first_block")}
  config.model.init_from = path
  return config


@pytest.mark.slow
def test_init_from_replaces_the_backbone_of_the_initial_state(tmp_path):
  from msp.train.setup import build_meta_learner
  state_dict = _fake_state_dict(np.random.default_rng(0))
  np.savez(tmp_path / "weights.npz", **state_dict)
  learner = build_meta_learner(_init_from_config(str(tmp_path / "weights.npz")))
  state = learner.init_state(jax.random.key(0))
  expected = backbone_variables(state_dict, SMALL)
  jax.tree.map(np.testing.assert_array_equal, state.params["backbone"], expected["params"])
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats["backbone"], expected["batch_stats"])
  fresh = build_meta_learner(_init_from_config(None)).init_state(jax.random.key(0))
  heads = lambda params: {name: value for name, value in params.items() if name != "backbone"}
  jax.tree.map(np.testing.assert_array_equal, heads(state.params), heads(fresh.params))


@pytest.mark.parametrize("name,make,backbone", [
    ("missing.npz", None, SMALL),
    ("garbage.npz", lambda path: path.write_bytes(b"not a state dict"), SMALL),
    ("wider.npz", lambda path: np.savez(path, **_fake_state_dict(np.random.default_rng(0),
                                                                 SMALL.clone(widths=(2, 6)))), SMALL),
    ("resnet.npz", lambda path: np.savez(path, **_fake_state_dict(np.random.default_rng(0))),
     SMALL.clone(stem="deep"))])
def test_init_from_that_does_not_fit_is_a_one_line_config_error(tmp_path, name, make, backbone):
  from msp.train import ConfigError
  from msp.train.setup import build_meta_learner
  path = tmp_path / name
  if make is not None:
    make(path)
  learner = build_meta_learner(_init_from_config(str(path), backbone))
  with pytest.raises(ConfigError, match=f"^model.init_from='{path}': [^\n]+$"):
    learner.init_state(jax.random.key(0))  # fails before it compiles


def test_paper_torchvision_config_starts_from_a_torchvision_resnet50(tmp_path):
  """The `paper_torchvision` network (ResNet-50 at 256², shapes only) takes a full torchvision state dict."""
  from experiments.configs import nyuv2
  from msp.train.setup import build_meta_learner
  config = nyuv2.get_config("budget,paper_torchvision")
  config.model.init_from = str(tmp_path / "resnet50.npz")
  np.savez(config.model.init_from, **_fake_state_dict(
      np.random.default_rng(0), ResNet(**BACKBONES["resnet50_torchvision_dilated"]), classes=1000))
  state = jax.eval_shape(build_meta_learner(config).init_state, jax.random.key(0))
  assert state.params["backbone"]["stage4_block2"]["conv3"]["conv"]["kernel"].shape == (1, 1, 512, 2048)
