"""Paper-scale backbones and heads: counts computed independently here, dilation placement, head shapes and
dropout, the head-kind mapping, FLOP/parameter counting by hand, and the `paper` config's step inputs."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data_pipelines.episodes import MetaBatchSampler, target_specs
from experiments.configs import celebamask_hq, nyuv2
from msp.models import MultiTaskNet, ResNet, build_model
from msp.models.deeplab import ASPPHead, ConvPoolMLPHead
from msp.models.presets import BACKBONES
from experiments.reports.network_summary import summary_rows
from msp.sparsity import CostModel, GroupSpec
from msp.tasks import build_tasks
from msp.train.config import defaults
from msp.train import build_meta_learner


def _resnet50_convs(stem: str) -> dict[str, list[tuple[int, int, int, int]]]:
  """Kernel shapes (kh, kw, I, O) of a ResNet-50 per part, written out from its description (docs/method.md §13,
  torchvision): every stage's first block has a 1×1 projection shortcut, as its input width differs from 4·width."""
  if stem == "deep":
    parts, channels = {"stem": [(3, 3, 3, 64), (3, 3, 64, 64), (3, 3, 64, 128)]}, 128
  else:
    parts, channels = {"stem": [(7, 7, 3, 64)]}, 64
  for s, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
    convs = []
    for b in range(blocks):
      convs += [(1, 1, channels, width), (3, 3, width, width), (1, 1, width, 4 * width)]
      if b == 0:
        convs.append((1, 1, channels, 4 * width))
      channels = 4 * width
    parts[f"stage{s}"] = convs
  return parts


@pytest.mark.parametrize("preset,stem,kernels,weights,channels", [
    ("resnet50_deep_dilated", "deep", 55, 23_578_304, 26_752),
    ("resnet50_torchvision_dilated", "torchvision", 53, 23_454_912, 26_560)])
def test_resnet50_counts_match_an_independent_count(preset, stem, kernels, weights, channels):
  expected = _resnet50_convs(stem)
  convs = [shape for part in expected.values() for shape in part]
  assert (len(convs), sum(np.prod(k) for k in convs), sum(k[3] for k in convs)) == (kernels, weights, channels)
  backbone = ResNet(**BACKBONES[preset])
  features, variables = jax.eval_shape(lambda: backbone.init_with_output(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  assert features.shape == (1, 8, 8, 2048)  # output stride 8
  kernels_found = [x.shape for p, x in jax.tree_util.tree_leaves_with_path(variables["params"])
                   if p[-1].key == "kernel"]
  assert sorted(kernels_found) == sorted(convs)
  assert not any(p[-2].key == "conv" and p[-1].key == "bias" for p, _ in
                 jax.tree_util.tree_leaves_with_path(variables["params"]))  # no conv biases


def test_torchvision_variant_keeps_the_previous_dilation_in_a_stage_first_block():
  dilations = lambda b: {name: fields["dilation"] for name, _, fields in ResNet(**b)._blocks()}
  torchvision = dilations(BACKBONES["resnet50_torchvision_dilated"])
  authors = dilations(BACKBONES["resnet50_deep_dilated"])
  assert [torchvision[f"stage3_block{b}"] for b in range(6)] == [1, 2, 2, 2, 2, 2]
  assert [torchvision[f"stage4_block{b}"] for b in range(3)] == [2, 4, 4]
  assert [authors[f"stage3_block{b}"] for b in range(6)] == [2] * 6
  assert [authors[f"stage4_block{b}"] for b in range(3)] == [4] * 3


def test_summary_of_the_paper_config_per_stage():
  config = nyuv2.get_config("budget,paper")
  rows = summary_rows(config)
  for part, convs in _resnet50_convs("deep").items():
    assert rows[part]["kernels"] == len(convs)
    assert rows[part]["channels"] == rows[part]["groups"] == sum(k[3] for k in convs)
    assert rows[part]["params"] == sum(np.prod(k) + 2 * k[3] for k in convs)  # + BatchNorm scale and bias
  assert (rows["backbone"]["kernels"], rows["backbone"]["channels"]) == (55, 26_752)
  assert rows["backbone"]["params"] == 23_578_304 + 2 * 26_752
  # ASPP at output stride 8 (32² features of a 256² image), 256 channels, 2048 inputs, C outputs
  aspp = lambda c: (2048 * 256 + 3 * 9 * 2048 * 256 + 2048 * 256 + 5 * 256 * 256 + 9 * 256 * 256  # kernels
                    + 7 * 2 * 256 + 256 * c + c)  # 7 BatchNorms; the classifier
  assert rows["head_segmentation"]["params"] == aspp(40) and rows["head_depth"]["params"] == aspp(1)
  assert rows["network"]["params"] == rows["backbone"]["params"] + aspp(40) + aspp(1) + aspp(3)
  aspp_flops = 2 * (32 * 32 * (2048 * 256 * (1 + 27) + 256 * 256 * (5 + 9)) + 2048 * 256)
  assert rows["head_normals"]["gflops"] == pytest.approx((aspp_flops + 2 * 32 * 32 * 256 * 3) / 1e9)


def test_aspp_head_shapes_parameters_and_dropout():
  head = ASPPHead(out_channels=5, width=8, rates=(1, 2, 3))
  features = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  out, variables = jax.jit(lambda: head.init_with_output(jax.random.key(1), features, (24, 24), train=False))()
  assert out.shape == (2, 24, 24, 5)
  params = variables["params"]
  assert all(params[layer]["kernel"].shape[2] == 4 for layer in ASPPHead.feature_layers)  # they read the features
  assert params["aspp2"]["kernel"].shape == (3, 3, 4, 8) and params["project"]["kernel"].shape == (1, 1, 40, 8)
  train = jax.jit(lambda rngs: head.apply(variables, features, (24, 24), train=True, mutable=["batch_stats"],
                                          rngs=rngs)[0])
  np.testing.assert_array_equal(train(None), train(None))  # no "dropout" rng: deterministic
  assert not np.allclose(train({"dropout": jax.random.key(2)}), train(None))


def test_conv_pool_mlp_head():
  head = ConvPoolMLPHead(out_channels=3, width=8)
  features = jax.random.normal(jax.random.key(0), (2, 5, 5, 4))
  out, variables = jax.jit(lambda: head.init_with_output(jax.random.key(1), features, (40, 40), train=False))()
  assert out.shape == (2, 3) and variables["params"]["hidden"]["kernel"].shape == (8, 4)
  # conv → 2×2 max-pool (floor: the last row and column of 5 are dropped) → mean → MLP
  p = variables["params"]
  conv = jax.lax.conv_general_dilated(features, p["conv"]["kernel"], (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv"]["bias"]
  pooled = jnp.max(jax.nn.relu(conv)[:, :4, :4].reshape(2, 2, 2, 2, 2, 8), axis=(2, 4)).mean(axis=(1, 2))
  hidden = jax.nn.relu(pooled @ p["hidden"]["kernel"] + p["hidden"]["bias"])
  np.testing.assert_allclose(out, hidden @ p["out"]["kernel"] + p["out"]["bias"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="too small"):
    jax.eval_shape(lambda: head.init(jax.random.key(1), features[:, :1, :1], (8, 8), train=False))


def test_head_kinds_and_widths_come_from_the_model_config():
  tasks = build_tasks(ml_collections.ConfigDict({"seg": dict(kind="segmentation", num_classes=3),
                                                 "male": dict(kind="attributes", num_attributes=1)}), ("seg", "male"))
  model_config = defaults("model").model
  model_config.backbone = dict(depths=(1,), widths=(4,), strides=(2,), dilations=(1,))
  model_config.head_width = 16
  assert build_model(model_config, tasks).heads == (("seg", "dense", 3), ("male", "attribute", 1))
  model_config.head_kinds = {"dense": "aspp", "attribute": "conv_pool_mlp"}
  model_config.head_widths = {"aspp": 8}
  model = build_model(model_config, tasks)
  assert model.heads == (("seg", "aspp", 3), ("male", "conv_pool_mlp", 1))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))["params"]
  assert params["head_seg"]["aspp0"]["kernel"].shape == (1, 1, 4, 8)  # head_widths
  assert params["head_male"]["conv"]["kernel"].shape == (3, 3, 4, 16)  # head_width


def test_flop_and_parameter_counts_by_hand_with_dead_channels():
  """Stem: one 3×3 conv 3→4; one bottleneck block 4→(2, 2, 8) with a 1×1 projection 4→8; a dense head (3×3 conv
  8→4 with bias, 1×1 conv 4→2 with bias); 8×8 image, everything at 8×8 (2·64 = 128 FLOPs per weight)."""
  backbone = ResNet(depths=(1,), widths=(2,), strides=(1,), dilations=(1,), block="bottleneck", stem_width=4)
  model = MultiTaskNet(backbone, heads=(("seg", "dense", 2),), head_width=4)
  variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False))()
  spec = GroupSpec.from_params(variables["params"])
  costs = CostModel.from_model(model, spec, 8)
  dense = costs.counts()
  assert dense["backbone/stage0_conv1"] == (9 * 3 * 4 + 2 * 4, 128 * 9 * 3 * 4)  # the one conv, by hand
  assert dense["backbone/stage1_block0/conv2"] == (9 * 2 * 2 + 2 * 2, 128 * 9 * 2 * 2)
  assert dense["head_seg"] == (9 * 8 * 4 + 4 + 4 * 2 + 2, 128 * (9 * 8 * 4 + 4 * 2))
  # dead: stem channel 0, conv1 channel 1, conv3 channels 3 and 5, shortcut channel 5 (stream channel 5 dies)
  dead = {"stage0_conv1": [0], "stage1_block0/conv1": [1], "stage1_block0/conv3": [3, 5],
          "stage1_block0/shortcut": [5]}
  factors = [jnp.ones(layer.num_groups).at[jnp.array(dead.get(layer.name.removeprefix("backbone/"), []),
                                                     int)].set(0.0) for layer in spec.layers]
  pruned = costs.counts(spec.scale_groups(variables["params"], factors))
  assert pruned == {
      "backbone/stage0_conv1": (9 * 3 * 3 + 2 * 3, 128 * 9 * 3 * 3),
      "backbone/stage1_block0/conv1": (3 * 1 + 2 * 1, 128 * 3 * 1),
      "backbone/stage1_block0/conv2": (9 * 1 * 2 + 2 * 2, 128 * 9 * 1 * 2),
      "backbone/stage1_block0/conv3": (2 * 6 + 2 * 6, 128 * 2 * 6),
      "backbone/stage1_block0/shortcut": (3 * 7 + 2 * 7, 128 * 3 * 7),
      "head_seg": (9 * 7 * 4 + 4 + 4 * 2 + 2, 128 * (9 * 7 * 4 + 4 * 2))}
  assert costs.flops_kept(spec.scale_groups(variables["params"], factors)) == pytest.approx(
      sum(f for name, (_, f) in pruned.items() if name.startswith("backbone")) /
      sum(f for name, (_, f) in dense.items() if name.startswith("backbone")))


@pytest.mark.parametrize("get_config", [nyuv2.get_config, celebamask_hq.get_config])
def test_paper_modifier(get_config):
  default, paper = get_config("budget"), get_config("budget,paper")
  assert default.model.backbone.block == "basic" and not default.model.head_kinds
  assert paper.image_size == 256 and dict(paper.model.backbone) == BACKBONES["resnet50_deep_dilated"]
  assert dict(paper.model.head_kinds) == {"dense": "aspp", "attribute": "conv_pool_mlp"}
  assert get_config("budget,paper_torchvision").model.backbone.stem == "torchvision"


def test_abstract_inputs_match_a_sampled_meta_batch():
  config = nyuv2.get_config("budget,paper,tiny")  # the paper's heads on the tiny backbone
  learner = build_meta_learner(config)
  state, abstract = learner.abstract_inputs()
  size = config.image_size
  rng = np.random.default_rng(0)
  source = [{"image": rng.integers(0, 255, (size, size, 3), np.uint8),
             "segmentation": rng.integers(0, 40, (size, size), np.uint8),
             "depth": rng.uniform(size=(size, size)).astype(np.float32),
             "normals": rng.uniform(size=(size, size, 3)).astype(np.float32)} for _ in range(4)]
  m = config.meta
  sampled = MetaBatchSampler(source, target_specs(config.tasks, config.seen_tasks), m.episodes, m.support_size,
                             m.query_size, seed=0)(0)
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, jnp.dtype(x.dtype)), tree)
  assert shapes(abstract) == shapes(sampled)
  assert all(x.sharding is not None for x in jax.tree.leaves(state))
