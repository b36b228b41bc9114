"""Importing torchvision ResNet weights: the name mapping (numpy only) and equality with PyTorch; the ASPP head
equals torchvision's DeepLabHead (the PyTorch tests need torch and torchvision and are skipped without them)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp.models import ASPPHead, ResNet
from msp.models.presets import BACKBONES
from msp.models.torchvision_import import backbone_variables, import_backbone, load_state_dict

SMALL = ResNet(block="bottleneck", stem="torchvision", stem_width=4, depths=(1, 2), widths=(2, 4), strides=(1, 2),
               dilations=(1, 1))


def _fake_state_dict(rng):
  """A torchvision-named state dict for SMALL with random entries (PyTorch layouts: conv weights (O, I, kh, kw))."""
  shapes = {"conv1.weight": (4, 3, 7, 7)}
  for conv, (i, o, k) in {"layer1.0.conv1": (4, 2, 1), "layer1.0.conv2": (2, 2, 3), "layer1.0.conv3": (2, 8, 1),
                          "layer1.0.downsample.0": (4, 8, 1), "layer2.0.conv1": (8, 4, 1),
                          "layer2.0.conv2": (4, 4, 3), "layer2.0.conv3": (4, 16, 1),
                          "layer2.0.downsample.0": (8, 16, 1), "layer2.1.conv1": (16, 4, 1),
                          "layer2.1.conv2": (4, 4, 3), "layer2.1.conv3": (4, 16, 1)}.items():
    shapes[f"{conv}.weight"] = (o, i, k, k)
  norms = {name.removesuffix(".weight").replace("conv", "bn").replace("downsample.0", "downsample.1"): shape[0]
           for name, shape in shapes.items()}
  for norm, channels in norms.items():
    shapes.update({f"{norm}.{leaf}": (channels,) for leaf in ("weight", "bias", "running_mean", "running_var")})
  state = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
  state.update({f"{norm}.num_batches_tracked": np.array(3) for norm in norms})
  state.update({"fc.weight": np.zeros((10, 16), np.float32), "fc.bias": np.zeros(10, np.float32)})
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


def _torch_and_torchvision():
  """(torch, torchvision), or a skip when either cannot be imported."""
  torch = pytest.importorskip("torch")
  try:
    import torchvision  # pylint: disable=import-outside-toplevel
  except (ImportError, RuntimeError) as e:  # RuntimeError: a CUDA build of torchvision beside a CPU-only torch
    pytest.skip(f"torchvision cannot be imported: {e}")
  return torch, torchvision


def _randomize_batch_norms(torch, module):
  """Non-trivial BatchNorm parameters and running statistics, so that their mapping is checked too; eval mode."""
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.uniform_(-0.2, 0.2)
      m.running_var.uniform_(0.5, 1.5)
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.uniform_(-0.2, 0.2)
  return module.eval()


def test_equals_torchvision_dilated_resnet50():
  torch, torchvision = _torch_and_torchvision()
  torch.manual_seed(0)
  reference = _randomize_batch_norms(
      torch, torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]))
  images = np.random.default_rng(0).uniform(size=(2, 48, 48, 3)).astype(np.float32)
  layers = torch.nn.Sequential(*list(reference.children())[:-2])  # without avgpool and fc
  with torch.no_grad():
    expected = layers(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  backbone = ResNet(**BACKBONES["resnet50_torchvision_dilated"])
  variables = backbone_variables(reference.state_dict(), backbone)
  features = backbone.apply(variables, images, train=False)
  assert features.shape == expected.shape == (2, 6, 6, 2048)
  np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_aspp_head_equals_torchvision_deeplab_head():
  torch, torchvision = _torch_and_torchvision()
  torch.manual_seed(0)
  reference = _randomize_batch_norms(torch, torchvision.models.segmentation.deeplabv3.DeepLabHead(6, 3))
  state = {name: value.numpy() for name, value in reference.state_dict().items()}
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
  features = np.random.default_rng(0).normal(size=(2, 5, 5, 6)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(features.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  out = ASPPHead(3, 256).apply({"params": params, "batch_stats": stats}, features, (5, 5), train=False)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
