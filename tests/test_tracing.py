"""Channel dependencies found by tracing (msp.sparsity.tracing) on four model families, checked three ways: against
groups written out by hand, against msp's name-based groups for its own models, and numerically — zeroing a space's
groups must make its channels removable, i.e. the consumers' slices and statistics of those channels must no longer
change any output."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import msp.models.deeplab  # noqa: F401  (registers the DeepLab heads)
from msp.models import MultiTaskNet, ResNet
from msp.sparsity import CostModel, GroupSpec
from msp.sparsity.streams import stream_ties
from msp.sparsity.tracing import trace_channels
from tests.test_export import BACKBONES

SIZE = 16
HEADS = {"msp": (("seg", "dense", 3), ("attr", "attribute", 2)),
         "deeplab": (("seg", "aspp", 3), ("attr", "conv_pool_mlp", 2))}


class ResidualBlock(nn.Module):
  """flax/examples/imagenet's block: Flax's default module names (Conv_0, BatchNorm_0, ...)."""
  filters: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    residual = x
    y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False)(x)
    y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
    y = nn.Conv(self.filters, (3, 3), use_bias=False)(y)
    y = nn.BatchNorm(use_running_average=not train)(y)
    if residual.shape != y.shape:
      residual = nn.Conv(self.filters, (1, 1), self.strides, use_bias=False)(residual)
      residual = nn.BatchNorm(use_running_average=not train)(residual)
    return nn.relu(residual + y)


class FlaxResNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3), use_bias=False)(x)))
    x = ResidualBlock(8)(x, train)
    x = ResidualBlock(12, strides=2)(x, train)
    return {"cls": nn.Dense(5)(jnp.mean(x, axis=(1, 2)))}


class ConvDense(nn.Module):
  """A conv whose feature map is flattened into dense layers."""
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
    x = x.reshape(x.shape[0], -1)
    x = getattr(nn, self.activation)(nn.Dense(16)(x))
    x = nn.relu(nn.Dense(10)(x))
    return {"out": nn.Dense(3)(x)}


class UNet(nn.Module):
  """Encoder, max-pool, transposed-conv upsampling and a concatenation skip."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    block = lambda x, width: nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(width, (3, 3))(x)))
    skip = block(x, 4)
    low = block(nn.max_pool(skip, (2, 2), strides=(2, 2)), 6)
    up = nn.relu(nn.ConvTranspose(5, (2, 2), strides=(2, 2))(low))
    merged = block(jnp.concatenate([skip, up], axis=-1), 7)
    return {"seg": nn.Conv(2, (1, 1))(merged)}


def _msp(backbone: str, heads: str = "msp") -> MultiTaskNet:
  return MultiTaskNet(ResNet(**BACKBONES[backbone]), heads=HEADS[heads], head_width=4)


def _traced(model: nn.Module, image_size: int = SIZE, values: bool = True):
  """(variables with random statistics, images, inference apply, graph); without `values`, the variables' shapes
  only (jax.ShapeDtypeStruct: enough to trace)."""
  images = jax.random.uniform(jax.random.key(1), (2, image_size, image_size, 3))

  @jax.jit  # one compiled program: eager init and a random draw per leaf take seconds each
  def init(images):
    leaves, tree = jax.tree.flatten(model.init(jax.random.key(0), images, train=False))
    keys = jax.random.split(jax.random.key(9), len(leaves))  # every variable, BatchNorm's statistics away from 0 / 1
    return jax.tree.unflatten(tree, [v + jax.random.uniform(k, v.shape, v.dtype, 0.1, 0.5)
                                     for v, k in zip(leaves, keys)])

  variables = init(images) if values else jax.eval_shape(init, images)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return variables, images, apply, trace_channels(apply, variables, images)


def _summary(graph) -> list[tuple]:
  """Per space: (producers, coupled, consumers, statistics) as sets of '/'-joined paths without the collection."""
  names = lambda members: frozenset("/".join(m.path[1:]) for m in members)
  return [(names(s.producers), names(s.coupled), names(s.consumers), names(s.statistics)) for s in graph.spaces]


def _zero_and_perturb(variables, space, dead, perturb: bool, rng):
  """`variables` with the space's channels `dead` zeroed in producers and coupled entries and, with `perturb`,
  random values added to the consumers' and statistics' slices of those channels."""
  flat = dict(traverse_util.flatten_dict(variables))
  members = [(m, "zero") for m in (*space.producers, *space.coupled)]
  if perturb:
    members += [(m, "noise") for m in (*space.consumers, *space.statistics)]
  for member, what in members:
    value = np.array(flat[member.path])
    index = [slice(None)] * value.ndim
    index[member.axis] = np.isin(member.channels, dead)
    index = tuple(index)
    value[index] = 0.0 if what == "zero" else value[index] + rng.uniform(0.5, 1.5, value[index].shape)
    flat[member.path] = jnp.asarray(value)
  return traverse_util.unflatten_dict(flat)


def _largest_change(apply, variables, images, space, seed: int) -> float:
  """Zeroes about half the channels of `space`, perturbs their consumers and statistics, and returns the largest
  change of any output (0 when the channels are truly removable)."""
  rng = np.random.default_rng(seed)
  dead = rng.choice(space.size, size=max(1, space.size // 2), replace=False)
  zeroed = apply(_zero_and_perturb(variables, space, dead, False, rng), images)
  perturbed = apply(_zero_and_perturb(variables, space, dead, True, rng), images)
  return max(float(jnp.max(jnp.abs(zeroed[k] - perturbed[k]))) for k in zeroed)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_msp_models_trace_to_their_name_based_groups_tied_or_not(backbone):
  model = _msp(backbone)
  variables, _, _, graph = _traced(model, values=False)
  key = lambda spec: sorted((layer.kernels, layer.coupled, layer.kernel_shapes, layer.weight) for layer in spec.layers)
  untied = GroupSpec.from_params(variables["params"])
  assert key(GroupSpec.from_graph(graph, include=r"^backbone/", tie=False)) == key(untied)
  tied = GroupSpec.from_params(variables["params"], ties=stream_ties(model, set(untied.names)))
  assert key(GroupSpec.from_graph(graph, include=r"^backbone/")) == key(tied)
  assert not graph.refused


def test_the_flax_examples_resnet_groups_each_conv_with_its_own_batchnorm_and_ties_streams():
  _, _, _, graph = _traced(FlaxResNet(), values=False)
  block = lambda b, *names: frozenset(f"ResidualBlock_{b}/{n}" for n in names)
  norms = lambda prefix, *indices: frozenset(f"{prefix}BatchNorm_{i}/{leaf}" for i in indices
                                             for leaf in ("scale", "bias"))
  stats = lambda prefix, *indices: frozenset(f"{prefix}BatchNorm_{i}/{leaf}" for i in indices
                                             for leaf in ("mean", "var"))
  assert _summary(graph) == [
      (frozenset({"Conv_0/kernel"}) | block(0, "Conv_1/kernel"), norms("", 0) | norms("ResidualBlock_0/", 1),
       block(0, "Conv_0/kernel") | block(1, "Conv_0/kernel", "Conv_2/kernel"),
       stats("", 0) | stats("ResidualBlock_0/", 1)),
      (block(0, "Conv_0/kernel"), norms("ResidualBlock_0/", 0), block(0, "Conv_1/kernel"),
       stats("ResidualBlock_0/", 0)),
      (block(1, "Conv_0/kernel"), norms("ResidualBlock_1/", 0), block(1, "Conv_1/kernel"),
       stats("ResidualBlock_1/", 0)),
      (block(1, "Conv_1/kernel", "Conv_2/kernel"), norms("ResidualBlock_1/", 1, 2), frozenset({"Dense_0/kernel"}),
       stats("ResidualBlock_1/", 1, 2)),
  ]
  assert graph.outputs == (("params/Dense_0/kernel",),) and not graph.refused
  spec = GroupSpec.from_graph(graph, include=r"kernel$")
  assert [layer.name for layer in spec.layers] == ["Conv_0+1", "ResidualBlock_0/Conv_0", "ResidualBlock_1/Conv_0",
                                                   "ResidualBlock_1/Conv_1+1"]


def test_a_flattened_feature_map_feeds_dense_rows_channel_by_channel():
  _, _, _, graph = _traced(ConvDense(), image_size=8, values=False)
  assert [sorted(p.name for p in s.producers) for s in graph.spaces] == [
      ["params/Conv_0/kernel"], ["params/Dense_0/kernel"], ["params/Dense_1/kernel"]]
  conv, first, second = graph.spaces
  assert [m.name for m in conv.coupled] == ["params/Conv_0/bias"]
  (rows,) = conv.consumers
  assert rows.name == "params/Dense_0/kernel" and rows.axis == 0
  np.testing.assert_array_equal(rows.channels, np.tile(np.arange(4), 4 * 4))  # (h, w, c) flattened, c fastest
  assert [m.name for m in first.coupled] == ["params/Dense_0/bias"] and first.consumers[0].axis == 0
  spec = GroupSpec.from_graph(graph)
  assert [layer.kernel_shapes for layer in spec.layers] == [((3, 3, 3, 4),), ((64, 16),), ((16, 10),)]


def test_a_concatenation_skip_maps_each_input_to_its_slice_of_the_consumer():
  _, _, _, graph = _traced(UNet(), values=False)
  by_producer = {s.producers[0].name: s for s in graph.spaces}
  skip, low, up = (by_producer[f"params/{name}/kernel"] for name in ("Conv_0", "Conv_1", "ConvTranspose_0"))
  reads = lambda space: {m.name: m.channels.tolist() for m in space.consumers}
  assert reads(skip) == {"params/Conv_1/kernel": list(range(4)), "params/Conv_2/kernel": [0, 1, 2, 3] + [-1] * 5}
  assert reads(up) == {"params/Conv_2/kernel": [-1] * 4 + list(range(5))}
  assert reads(low) == {"params/ConvTranspose_0/kernel": list(range(6))}
  assert graph.outputs == (("params/Conv_3/kernel",),) and not graph.refused


MODELS = {**{f"msp_{b}": (lambda b=b: _msp(b)) for b in BACKBONES}, "msp_deeplab": lambda: _msp("basic", "deeplab"),
          "flax_resnet": FlaxResNet, "conv_dense": ConvDense, "unet": UNet}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zeroed_groups_make_channels_that_no_consumer_or_statistic_sees(name):
  """The independent check: with a space's groups zeroed, arbitrary values in the consumers' and statistics' slices
  of those channels change no output (up to float rounding), for every space of every model."""
  variables, images, apply, graph = _traced(MODELS[name](), image_size=8 if name == "conv_dense" else SIZE)
  assert graph.spaces
  for i, space in enumerate(graph.spaces):
    assert _largest_change(apply, variables, images, space, seed=i) <= 1e-5, [m.name for m in space.producers]


def test_the_check_itself_sees_a_channel_that_stays_alive():
  """The same perturbation on a space whose activation maps 0 to a non-zero value changes the outputs: the check can
  fail, and the tracer refuses that space, naming the op and the parameters."""
  variables, images, apply, graph = _traced(ConvDense(activation="softplus"), image_size=8)
  (refusal,) = graph.refused
  assert refusal.producers == ("params/Dense_0/kernel",)
  assert "cannot be removed" in refusal.message and "`dot_general`" in refusal.message
  assert "`exp` at " + __file__ in refusal.message  # inside softplus: named by the user's line that calls it
  _, _, _, fine = _traced(ConvDense(), image_size=8, values=False)
  dense_space = next(s for s in fine.spaces if s.producers[0].name == "params/Dense_0/kernel")
  assert _largest_change(apply, variables, images, dense_space, seed=0) > 1e-3


class _Normalised(nn.Module):
  norm: str

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3))(x)
    if self.norm == "layer":
      x = nn.LayerNorm()(x)
    elif self.norm == "group":
      x = nn.GroupNorm(num_groups=2)(x)
    else:
      x = jnp.sort(x, axis=-1)
    return {"out": nn.Conv(2, (1, 1))(nn.relu(x))}


@pytest.mark.parametrize("norm, op", [("layer", "`reduce_sum` over the channels"),
                                      ("group", "a reshape that spreads channels over several axes"),
                                      ("sort", "an op the tracer does not follow channels through (`sort`")])
def test_ops_that_mix_channels_refuse_them_in_one_message(norm, op):
  _, _, _, graph = _traced(_Normalised(norm), values=False)
  assert not graph.spaces
  (refusal,) = graph.refused
  assert refusal.producers == ("params/Conv_0/kernel",) and op in refusal.message
  with pytest.raises(ValueError, match=r"sparsity.include='Conv_0' selects channels that cannot be removed: the "
                                       r"channels of params/Conv_0/kernel cannot be removed: .*Leave those"):
    GroupSpec.from_graph(graph, include="Conv_0")


def test_include_must_take_a_residual_stream_whole():
  _, _, _, graph = _traced(FlaxResNet(), values=False)
  with pytest.raises(ValueError, match=r"matches \['params/Conv_0/kernel'\] but not "
                                       r"\['params/ResidualBlock_0/Conv_1/kernel'\], which write the same channels"):
    GroupSpec.from_graph(graph, include=r"^Conv_0/")
  with pytest.raises(ValueError, match="matches no producer"):
    GroupSpec.from_graph(graph, include="nothing")


def test_flops_per_pair_are_those_of_each_layer():
  """2·(output pixels)·(kernel window) per channel pair for a conv, 2 per row for a dense layer, at batch 2."""
  _, _, _, graph = _traced(ConvDense(), image_size=8, values=False)
  flops = {"/".join(c.kernel[1:]): c.flops_per_pair for c in graph.contractions}
  assert flops == {"Conv_0/kernel": 2 * 2 * 4 * 4 * 9, "Dense_0/kernel": 2 * 2, "Dense_1/kernel": 2 * 2,
                   "Dense_2/kernel": 2 * 2}


def test_costs_of_a_traced_network_by_hand():
  """A conv 3→4 (stride 2, 8² → 4²) flattened into dense layers 64→16→10→3, with dead channels: FLOPs and parameters
  counted by hand (2 FLOPs per multiply-add, batch 1)."""
  model = ConvDense()
  variables, _, _, _ = _traced(model, image_size=8)
  spec = GroupSpec.from_graph(trace_channels(lambda v, x: model.apply(v, x), variables, jnp.zeros((1, 8, 8, 3))))
  costs = CostModel.from_model(model, spec, 8)
  a, b, c = (np.arange(n) % 3 != 0 for n in (4, 16, 10))  # alive: 2 of 4, 10 of 16, 6 of 10
  na, nb, nc = (int(m.sum()) for m in (a, b, c))
  flops = lambda na, nb, nc: 2 * 16 * 9 * 3 * na + 2 * 16 * na * nb + 2 * nb * nc
  assert costs.dense_flops == flops(4, 16, 10)
  assert float(costs.flops_kept_by_alive([a, b, c])) == pytest.approx(flops(na, nb, nc) / flops(4, 16, 10))
  params = spec.scale_groups(variables["params"], [jnp.asarray(m, jnp.float32) for m in (a, b, c)])
  assert costs.counts(params) == {
      "Conv_0": (9 * 3 * na + na, 2 * 16 * 9 * 3 * na), "Dense_0": (16 * na * nb + nb, 2 * 16 * na * nb),
      "Dense_1": (nb * nc + nc, 2 * nb * nc), "Dense_2": (nc * 3 + 3, 2 * nc * 3)}


def test_grouping_by_name_refuses_flax_default_names_instead_of_merging_layers():
  """Flax's default names put each block's two convs at ResidualBlock_k/Conv_j/kernel: grouping by name would make
  one layer of both (coupled to the first conv's BatchNorm); it raises, pointing at tracing."""
  variables, _, _, _ = _traced(FlaxResNet(), values=False)
  with pytest.raises(ValueError, match=r"ResidualBlock_0/Conv_0/kernel and ResidualBlock_0/Conv_1/kernel name the "
                                       r"same layer: .*tracing it instead \(GroupSpec.from_graph\)"):
    GroupSpec.from_params(variables["params"], include=r".*kernel$")
