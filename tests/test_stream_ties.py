"""Tied groups (one group per residual-stream channel across every conv that writes it), against numpy written here,
hand-listed streams, and the exported network's own FLOPs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import synthetic
from msp.export.prune import plan_pruning, prune
from msp.models import MultiTaskNet, ResNet, build_model
from msp.sparsity import (CostModel, GroupSpec, backbone_flops, block_soft_threshold, group_lasso, group_spec,
                          sparsity_stats, stream_ties)
from msp.tasks import build_tasks

SHAPES = {"a": (3, 3, 2, 4), "b": (3, 3, 4, 4), "c": (1, 1, 2, 4)}
TIE = {"backbone/bc": ("backbone/b", "backbone/c")}


def _params(rng):
  return {"backbone": {name: {"conv": {"kernel": rng.normal(size=shape)},
                              "norm": {"scale": rng.normal(size=shape[-1]), "bias": rng.normal(size=shape[-1])}}
                       for name, shape in SHAPES.items()}}


def _tied_sqnorms(params):
  """(4,) ‖θ_g‖² of the tied groups: channel c of b's and c's kernels and BatchNorm entries together."""
  total = np.zeros(4)
  for name in ("b", "c"):
    layer = params["backbone"][name]
    total += np.sum(layer["conv"]["kernel"] ** 2, axis=(0, 1, 2)) + layer["norm"]["scale"] ** 2
    total += layer["norm"]["bias"] ** 2
  return total


def test_a_tie_is_one_layer_whose_group_spans_its_convs(x64):
  params = _params(np.random.default_rng(0))
  spec = GroupSpec.from_params(params, ties=TIE)
  assert spec.names == ("backbone/a", "backbone/bc")
  tied = spec.layers[1]
  size = 3 * 3 * 4 + 1 * 1 * 2 + 4  # both kernels' slices and two BatchNorms' scale and bias
  assert tied.members == ("backbone/b", "backbone/c") and tied.group_size == size
  assert tied.weight == pytest.approx(np.sqrt(size))
  norms = np.sqrt(_tied_sqnorms(params))
  np.testing.assert_allclose(spec.group_norms(params)[1], norms, rtol=1e-12)
  np.testing.assert_allclose(group_lasso(params, spec)[1], np.sqrt(size) * norms.sum(), rtol=1e-12)
  # the prox shrinks every entry of a tied group by one factor: max(0, 1 − τ w / ‖θ_g‖)
  tau = np.mean(np.sort(norms)[1:3]) / np.sqrt(size)  # between the 2nd and 3rd smallest: two groups die
  out = block_soft_threshold(params, spec, jnp.asarray([0.0, tau]))
  factors = np.maximum(0.0, 1.0 - tau * np.sqrt(size) / norms)
  assert np.sum(factors == 0) == 2
  for name in ("b", "c"):
    np.testing.assert_allclose(out["backbone"][name]["conv"]["kernel"],
                               params["backbone"][name]["conv"]["kernel"] * factors, rtol=1e-12)
    for leaf in ("scale", "bias"):
      np.testing.assert_allclose(out["backbone"][name]["norm"][leaf], params["backbone"][name]["norm"][leaf] * factors,
                                 rtol=1e-12)
  np.testing.assert_array_equal(out["backbone"]["a"]["conv"]["kernel"], params["backbone"]["a"]["conv"]["kernel"])
  stats = sparsity_stats(out, spec)
  np.testing.assert_array_equal(stats["alive_channels"], [4, np.sum(factors > 0)])
  assert float(stats["group_sparsity_total"]) == pytest.approx(np.sum(factors == 0) / 8)


@pytest.mark.parametrize("ties,grouping,message", [
    ({"backbone/x": ("backbone/b", "backbone/d")}, "out_channel", r"\['backbone/d'\] are not sparsified convs"),
    ({"backbone/x": ("backbone/a", "backbone/b")}, "in_channel", "ties need grouping 'out_channel'"),
    ({"backbone/x": ()}, "out_channel", "'backbone/x': no convs"),
])
def test_a_tie_that_does_not_fit_is_an_error(ties, grouping, message):
  params = _params(np.random.default_rng(1))
  with pytest.raises(ValueError, match=message):
    GroupSpec.from_params(params, grouping=grouping, ties=ties)


def test_a_tie_of_convs_with_different_widths_is_an_error():
  params = _params(np.random.default_rng(2))
  params["backbone"]["c"]["conv"]["kernel"] = np.zeros((1, 1, 2, 3))
  params["backbone"]["c"]["norm"] = {"scale": np.zeros(3), "bias": np.zeros(3)}
  with pytest.raises(ValueError, match=r"different output channels \[4, 3\]"):
    GroupSpec.from_params(params, ties=TIE)


def _net(**backbone) -> MultiTaskNet:
  return MultiTaskNet(ResNet(**backbone), heads=(("seg", "dense", 3), ("attr", "attribute", 2)), head_width=4)


IDENTITY_THEN_PROJECTION = dict(depths=(1, 2), widths=(4, 6), strides=(1, 2), dilations=(1, 1), stem_width=4)


def test_stream_ties_list_each_streams_producers():
  names = lambda net: {f"backbone/{conv}" for conv in net.backbone.channel_sources()[0]}
  net = _net(**IDENTITY_THEN_PROJECTION)
  assert stream_ties(net, names(net)) == {
      "backbone/stage1_stream": ("backbone/stage0_conv1", "backbone/stage1_block0/conv2"),
      "backbone/stage2_stream": ("backbone/stage2_block0/conv2", "backbone/stage2_block0/shortcut",
                                 "backbone/stage2_block1/conv2")}
  # only sparsified convs join; a stream left with one is no tie
  assert stream_ties(net, names(net) - {"backbone/stage0_conv1"}) == {
      "backbone/stage2_stream": ("backbone/stage2_block0/conv2", "backbone/stage2_block0/shortcut",
                                 "backbone/stage2_block1/conv2")}


def test_a_flops_budget_ties_every_stage_of_the_synthetic_backbone_and_no_other_config_does():
  untied = synthetic.get_config("budget,tiny")
  tied = synthetic.get_config("budget,flops=0.5,tiny")
  model = build_model(tied.model, build_tasks(tied.tasks, tied.seen_tasks))
  tied_spec, untied_spec = (group_spec(c, model) for c in (tied, untied))
  stages = range(1, len(model.backbone.widths) + 1)
  assert [layer.name for layer in tied_spec.layers if len(layer.members) > 1] == [
      f"backbone/stage{s}_stream" for s in stages]
  assert sorted(m for layer in tied_spec.layers for m in layer.members) == sorted(untied_spec.names)


def _random_variables(model: MultiTaskNet, size: int, rng: np.random.Generator):
  """Kernels N(0, 1/fan_in), every other leaf (biases, BatchNorm parameters and statistics) uniform in [0.5, 1.5]."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  draw = lambda s: (rng.normal(0.0, 1.0 / np.sqrt(np.prod(s.shape[:-1])), s.shape) if len(s.shape) > 1
                    else rng.uniform(0.5, 1.5, s.shape))
  return jax.tree.map(lambda s: jnp.asarray(draw(s), jnp.float32), shapes)


def test_dead_tied_channels_leave_the_stream_and_the_cost_model_counts_the_exported_network():
  size = 16
  net = _net(**IDENTITY_THEN_PROJECTION)
  variables = _random_variables(net, size, np.random.default_rng(3))
  names = {f"backbone/{conv}" for conv in net.backbone.channel_sources()[0]}
  spec = GroupSpec.from_params(variables["params"], ties=stream_ties(net, names))
  dead = {"backbone/stage1_stream": [0, 2], "backbone/stage2_stream": [1], "backbone/stage2_block1/conv1": [0, 3, 5]}
  factors = [jnp.asarray(np.isin(np.arange(layer.num_groups), dead.get(layer.name, []), invert=True), jnp.float32)
             for layer in spec.layers]
  masked = {**variables, "params": spec.scale_groups(variables["params"], factors)}
  plan = plan_pruning(net, masked["params"])
  assert {conv: len(kept) for conv, kept in plan.kept.items()} == {
      "stage0_conv1": 2, "stage1_block0/conv1": 4, "stage1_block0/conv2": 2, "stage2_block0/conv1": 6,
      "stage2_block0/conv2": 5, "stage2_block0/shortcut": 5, "stage2_block1/conv1": 3, "stage2_block1/conv2": 5}
  pruned, pruned_variables = prune(net, masked, plan)
  images = jax.random.uniform(jax.random.key(4), (2, size, size, 3))
  want, got = net.apply(masked, images, train=False), pruned.apply(pruned_variables, images, train=False)
  for task in want:
    np.testing.assert_allclose(got[task], want[task], atol=1e-5)
  # the FLOPs the cost model predicts from the zero groups are those of the exported network, counted from its shapes
  costs = CostModel.from_model(net, spec, size)
  exported = backbone_flops(pruned.backbone, size) / backbone_flops(net.backbone, size)
  assert float(costs.flops_kept(masked["params"])) == pytest.approx(exported, rel=1e-6)
  assert exported < 1.0


def test_a_tied_layers_channel_cost_is_the_sum_of_its_convs_costs():
  net = _net(**IDENTITY_THEN_PROJECTION)
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))["params"]
  untied = GroupSpec.from_params(params)
  ties = stream_ties(net, set(untied.names))
  tied = GroupSpec.from_params(params, ties=ties)
  for kind in ("flops", "params"):
    per_conv = dict(zip(untied.names, CostModel.from_model(net, untied, 16).channel_costs(kind)))
    per_layer = dict(zip(tied.names, CostModel.from_model(net, tied, 16).channel_costs(kind)))
    # normalisations differ; ratios to an untied conv do not
    unit = "backbone/stage1_block0/conv1"
    for name, members in ties.items():
      assert per_layer[name] / per_layer[unit] == pytest.approx(sum(per_conv[m] for m in members) / per_conv[unit])


def test_a_flops_budget_and_no_other_config_has_relative_thresholds():
  config = synthetic.get_config("budget,tiny")
  model = build_model(config.model, build_tasks(config.tasks, config.seen_tasks))
  assert not group_spec(config, model).relative
  config.budget.target_kind = "flops_kept"
  assert group_spec(config, model).relative
  config.budget.enabled = False
  assert not group_spec(config, model).relative
