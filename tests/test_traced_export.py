"""Physical pruning of any traced network (msp.export.traced): the replayed, smaller network computes what the masked
dense one does, runs under jax.export at any batch size, and on msp's own networks removes exactly the channels that
msp's name-based export removes; and a model of a user's through budget mode to its pruned export."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from msp.export.prune import plan_pruning, prune
from msp.export.traced import dead_channels, prune_traced
from msp.meta import MetaBatch, MetaObjective, MultiTaskLoss, init_rho
from msp.parallel import make_mesh, replicate
from msp.sparsity import Budget, CostModel, GroupSpec, trace_channels
from msp.sparsity.tracing import trace
from msp.train import MetaTrainState, make_meta_train_step
from tests.test_tracing import MODELS, FlaxResNet, _traced, _zero_and_perturb


def _with_dead_channels(name: str, seed: int = 0, prefix: str = ""):
  """(model, variables with about half of the channels zeroed in every space whose producers' paths start with
  "params/" + `prefix`, images, apply, graph)."""
  model = MODELS[name]()
  variables, images, apply, graph = _traced(model, image_size=8 if name == "conv_dense" else 16)
  rng = np.random.default_rng(seed)
  for space in (s for s in graph.spaces if s.producers[0].name.startswith(f"params/{prefix}")):
    variables = _zero_and_perturb(variables, space, rng.choice(space.size, space.size // 2, replace=False), False,
                                  rng)
  return model, variables, images, apply, graph


def _size(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def _relative_difference(reference: dict, outputs: dict) -> float:
  return max(float(jnp.max(jnp.abs(reference[k] - outputs[k])) / jnp.max(jnp.abs(reference[k]))) for k in reference)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_pruned_replay_computes_the_masked_network_with_fewer_parameters(name):
  _, variables, images, apply, graph = _with_dead_channels(name)
  pruned = prune_traced(apply, variables, images)
  assert _relative_difference(apply(variables, images), jax.jit(pruned.forward)(pruned.variables, images)) <= 1e-5
  dead = dead_channels(trace(apply, variables, images), variables)
  assert [len(k) for k in pruned.kept] == [max(1, int((~d).sum())) for d in dead]
  assert all(d.sum() >= s.size // 2 for d, s in zip(dead, graph.spaces))  # the zeroed channels are found dead
  assert _size(pruned.variables["params"]) < _size(variables["params"])


@pytest.mark.parametrize("name", ["flax_resnet", "unet", pytest.param("msp_deeplab", marks=pytest.mark.slow)])
def test_the_pruned_network_exports_with_a_symbolic_batch(name):
  _, variables, images, apply, _ = _with_dead_channels(name)
  pruned = prune_traced(apply, variables, images)
  forward = jax.jit(lambda x: pruned.forward(pruned.variables, x))
  shape = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {images.shape[1]}, {images.shape[2]}, 3"), jnp.float32)
  exported = jax.export.deserialize(jax.export.export(forward)(shape).serialize())
  three = jax.random.uniform(jax.random.key(7), (3, *images.shape[1:]))
  assert _relative_difference(apply(variables, three), exported.call(three)) <= 1e-5


@pytest.mark.parametrize("name", ["msp_basic", "msp_plain", pytest.param("msp_bottleneck_deep",
                                                                        marks=pytest.mark.slow)])
def test_on_msp_networks_it_removes_what_the_name_based_export_removes(name):
  model, variables, images, apply, _ = _with_dead_channels(name, seed=3, prefix="backbone/")  # msp prunes backbones
  traced = prune_traced(apply, variables, images)
  _, by_name = prune(model, variables, plan_pruning(model, variables["params"]))
  shapes = lambda tree: {path: x.shape for path, x in traverse_util.flatten_dict(tree).items()}
  assert shapes(traced.variables) == shapes(by_name)


@pytest.mark.slow
def test_budget_mode_on_the_flax_examples_resnet_then_its_pruned_export():
  """A user's model end to end with the library's pieces: traced tied groups and costs, budget mode at half the
  FLOPs with the user's loss and optax optimiser, then the pruned replay of the trained state."""
  model, images, mesh = FlaxResNet(), jnp.zeros((1, 16, 16, 3)), make_mesh(1)
  variables = model.init(jax.random.key(0), images)
  graph = trace_channels(lambda v, x: model.apply(v, x), variables, images)
  spec = GroupSpec.from_graph(graph, include="^(Conv_0|ResidualBlock)", relative=True)
  costs = CostModel.from_graph(graph, variables["params"], spec)
  budget = Budget("flops_kept", 0.5, costs.channel_costs("flops"), costs, dual_lr=0.5)
  task = collections.namedtuple("Task", "name loss")(
      "cls", lambda p, y: optax.softmax_cross_entropy_with_integer_labels(p, y).mean())
  objective = MetaObjective(MultiTaskLoss(model.apply, (task,)), spec, inner_steps=1, inner_lr=0.05,
                            mode="first_order", min_alive=1, budget=budget)
  step = make_meta_train_step(objective, mesh, optax.constant_schedule(0.05), cost_model=costs)
  rho = init_rho(spec.num_layers, "per_layer", 3.0) + jnp.log(jnp.asarray(budget.costs, jnp.float32))
  state = replicate(MetaTrainState.create(params=variables["params"], batch_stats=variables["batch_stats"], rho=rho,
                                          tx=optax.sgd(0.05), rho_tx=optax.adam(0.01)), mesh)
  rng = np.random.default_rng(0)
  batch = lambda: {"image": rng.uniform(size=(2, 4, 16, 16, 3)).astype(np.float32), "cls": rng.integers(0, 5, (2, 4))}
  for _ in range(2):
    state, metrics = step(state, MetaBatch(batch(), batch(), task_mask=np.ones((2, 1), np.float32)))
  assert 0.5 <= float(metrics["flops_kept"]) < 0.75  # pruned, never past the target (the budget's cap)
  assert float(metrics["flops_kept"]) == pytest.approx(float(costs.flops_kept(state.params)))
  trained = {"params": state.params, "batch_stats": state.batch_stats}
  apply = lambda v, x: model.apply(v, x)
  pruned = prune_traced(apply, trained, images)
  x = jax.random.uniform(jax.random.key(2), (3, 16, 16, 3))
  assert _relative_difference(apply(trained, x), pruned.forward(pruned.variables, x)) <= 1e-5
  assert [len(k) for k in pruned.kept] == [int(a) for a in metrics["alive_channels"]]
