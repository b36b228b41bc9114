"""Model shapes, purity, and the property that out_channel groups are exact channel switches."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp.models import MultiTaskNet, ResNet
from msp.sparsity import GroupSpec


def _net(activation="relu", block="basic", **kw):
  backbone = ResNet(depths=(1, 2), widths=(4, 6), strides=(1, 2), dilations=(1, 1), block=block, stem_width=4,
                    activation=activation, **kw)
  return MultiTaskNet(backbone, heads=(("seg", "dense", 5), ("attr", "attribute", 3)), head_width=4)


@pytest.mark.parametrize("block,stem,out_channels,stride", [
    ("basic", "simple", 6, 2), ("bottleneck", "simple", 24, 2), ("plain", "simple", 6, 2),
    ("bottleneck", "deep", 24, 8), ("basic", "torchvision", 6, 8)])
def test_backbone_shapes(block, stem, out_channels, stride):
  net = ResNet(depths=(1, 2), widths=(4, 6), strides=(1, 2), block=block, stem=stem, stem_width=8)
  x = jnp.zeros((2, 32, 32, 3))
  y, _ = net.init_with_output(jax.random.key(0), x, train=False)
  assert y.shape == (2, 32 // stride, 32 // stride, out_channels)


def test_dilation_keeps_resolution():
  net = ResNet(depths=(1, 1), widths=(4, 4), strides=(1, 1), dilations=(1, 4))
  y, _ = net.init_with_output(jax.random.key(0), jnp.zeros((1, 12, 12, 3)), train=False)
  assert y.shape == (1, 12, 12, 4)


def test_heads_shapes_and_apply_is_pure():
  net = _net()
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  variables = net.init(jax.random.key(0), x, train=False)
  out1 = net.apply(variables, x, train=False)
  out2 = net.apply(variables, x, train=False)
  assert out1["seg"].shape == (2, 16, 16, 5) and out1["attr"].shape == (2, 3)
  np.testing.assert_array_equal(out1["seg"], out2["seg"])
  train_out, updates = net.apply(variables, x, train=True, mutable=["batch_stats"])
  assert not np.allclose(train_out["seg"], out1["seg"])  # batch statistics differ from the initial averages
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("train", [True, False])
def test_zero_out_channel_group_gives_exactly_zero_activation(activation, train):
  net = _net(activation)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  variables = net.init(jax.random.key(0), x, train=False)
  spec = GroupSpec.from_params(variables["params"])
  # make running statistics non-trivial, so eval mode subtracts a non-zero mean
  variables = {**variables, "batch_stats": jax.tree.map(lambda s: s + 0.3, variables["batch_stats"])}
  # zero channel 1 of the stage-2 first conv (followed by BN + activation inside its ConvNorm)
  target = "backbone/stage2_block0/conv1"
  factors = [jnp.ones(layer.num_groups).at[1].set(0.0) if layer.name == target else jnp.ones(layer.num_groups)
             for layer in spec.layers]
  params = spec.scale_groups(variables["params"], factors)
  _, state = net.apply({**variables, "params": params}, x, train=train, capture_intermediates=True,
                       mutable=["intermediates", "batch_stats"])
  act = np.asarray(state["intermediates"]["backbone"]["stage2_block0"]["conv1"]["__call__"][0])
  assert np.all(act[..., 1] == 0.0)
  assert np.any(act[..., 0] != 0.0)


def test_group_spec_finds_every_backbone_conv_in_network_order():
  net = _net()
  variables = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  spec = GroupSpec.from_params(variables["params"])
  assert spec.names == (
      "backbone/stage0_conv1",
      "backbone/stage1_block0/conv1", "backbone/stage1_block0/conv2",
      "backbone/stage2_block0/conv1", "backbone/stage2_block0/conv2", "backbone/stage2_block0/shortcut",
      "backbone/stage2_block1/conv1", "backbone/stage2_block1/conv2")
  assert all(len(layer.coupled) == 2 for layer in spec.layers)


def test_batchnorm_hides_a_uniform_shrinkage_of_all_but_the_last_layer():
  """Why budget mode's λ meta-gradient is nearly blind (docs/results/lambda_studies.md, "Where budget mode cuts"): in
  training mode, halving every group of a layer whose output feeds another ConvNorm leaves the outputs unchanged up
  to BatchNorm's ε; only the last backbone layer, which feeds the heads, changes them."""
  net = MultiTaskNet(ResNet(depths=(1, 1), widths=(8, 8), strides=(1, 1), block="plain", stem_width=8),
                     heads=(("reg", "dense", 2),), head_width=4)
  x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
  variables = net.init(jax.random.key(0), x, train=False)
  spec = GroupSpec.from_params(variables["params"])
  forward = lambda params: net.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])[0]
  base = np.asarray(forward(variables["params"])["reg"])
  changes = []
  for halved in range(spec.num_layers):
    factors = [jnp.full(layer.num_groups, 0.5 if i == halved else 1.0) for i, layer in enumerate(spec.layers)]
    changes.append(np.max(np.abs(np.asarray(forward(spec.scale_groups(variables["params"], factors))["reg"]) - base)))
  scale = np.max(np.abs(base))
  assert max(changes[:-1]) < 1e-3 * scale, changes
  assert changes[-1] > 0.1 * scale, changes


# The variables of experiments/configs/synthetic.py:budget,tiny's network, as the models built them before blocks
# stopped being created outside `ResNet.__call__`: checkpoints, sparsity regexes and the torchvision importer use
# these paths.
_TINY_CONVS = ("stage0_conv1", *(f"stage{s}_block0/{conv}" for s in (1, 2) for conv in ("conv1", "conv2", "shortcut")))
_TINY_PARAMS = sorted(
    [f"backbone/{conv}/{leaf}" for conv in _TINY_CONVS for leaf in ("conv/kernel", "norm/bias", "norm/scale")]
    + [f"head_{task}/{layer}/{leaf}" for task, layers in (("checkered_floor", ("conv", "hidden", "out")),
                                                          ("depth", ("conv", "out")),
                                                          ("segmentation", ("conv", "out")))
       for layer in layers for leaf in ("bias", "kernel")])
_TINY_BATCH_STATS = sorted(f"backbone/{conv}/norm/{leaf}" for conv in _TINY_CONVS for leaf in ("mean", "var"))
# task → (shape, mean, std) of the outputs for init key 0 on uniform images of key 1 (measured before the change)
_TINY_OUTPUTS = {"segmentation": ((2, 32, 32, 6), 0.03864636272192001, 0.20845744013786316),
                 "depth": ((2, 32, 32, 1), -0.05436333268880844, 0.08091665804386139),
                 "checkered_floor": ((2, 1), -0.038481876254081726, 0.009807051159441471)}


@pytest.mark.slow
def test_tabulate_works_and_keeps_variable_paths_and_outputs():
  from flax import traverse_util
  import flax.linen as nn
  from experiments.configs import synthetic
  from msp.models import build_model
  from msp.tasks import build_tasks
  config = synthetic.get_config("budget,tiny")
  model = build_model(config.model, build_tasks(config.tasks, config.seen_tasks))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  table = nn.tabulate(model, jax.random.key(0), depth=2)(images, train=False)
  assert "BasicBlock" in table and "ConvNorm" in table and "DenseHead" in table
  outputs, variables = jax.jit(lambda: model.init_with_output(jax.random.key(0), images, train=False))()
  paths = lambda tree: sorted("/".join(path) for path in traverse_util.flatten_dict(tree))
  assert paths(variables["params"]) == _TINY_PARAMS
  assert paths(variables["batch_stats"]) == _TINY_BATCH_STATS
  for task, output in outputs.items():
    shape, mean, std = _TINY_OUTPUTS[task]
    assert output.shape == shape
    np.testing.assert_allclose([jnp.mean(output), jnp.std(output)], [mean, std], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("preset", ["resnet50_deep_dilated", "resnet50_torchvision_dilated"])
def test_tabulate_lists_every_block_of_the_paper_backbones(preset):
  import flax.linen as nn
  from msp.models.presets import BACKBONES
  backbone = ResNet(**BACKBONES[preset])
  table = nn.tabulate(backbone, jax.random.key(0), depth=1, console_kwargs={"width": 400})(
      jnp.zeros((1, 64, 64, 3)), train=False)
  blocks = [f"stage{s + 1}_block{b}" for s, depth in enumerate(backbone.depths) for b in range(depth)]
  assert all(block in table for block in blocks) and table.count("BottleneckBlock") == len(blocks)
