"""Physical pruning of any traced network (msp.export.traced): the replayed, smaller network computes what the masked
dense one does, runs under jax.export at any batch size, and on msp's own networks removes exactly the channels that
msp's name-based export removes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from msp.export.prune import plan_pruning, prune
from msp.export.traced import dead_channels, prune_traced
from msp.sparsity.tracing import trace
from tests.test_tracing import MODELS, _traced, _zero_and_perturb


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


@pytest.mark.parametrize("name", ["flax_resnet", "msp_deeplab", "unet"])
def test_the_pruned_network_exports_with_a_symbolic_batch(name):
  _, variables, images, apply, _ = _with_dead_channels(name)
  pruned = prune_traced(apply, variables, images)
  forward = jax.jit(lambda x: pruned.forward(pruned.variables, x))
  shape = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {images.shape[1]}, {images.shape[2]}, 3"), jnp.float32)
  exported = jax.export.deserialize(jax.export.export(forward)(shape).serialize())
  three = jax.random.uniform(jax.random.key(7), (3, *images.shape[1:]))
  assert _relative_difference(apply(variables, three), exported.call(three)) <= 1e-5


@pytest.mark.parametrize("name", ["msp_basic", "msp_bottleneck_deep", "msp_plain"])
def test_on_msp_networks_it_removes_what_the_name_based_export_removes(name):
  model, variables, images, apply, _ = _with_dead_channels(name, seed=3, prefix="backbone/")  # msp prunes backbones
  traced = prune_traced(apply, variables, images)
  _, by_name = prune(model, variables, plan_pruning(model, variables["params"]))
  shapes = lambda tree: {path: x.shape for path, x in traverse_util.flatten_dict(tree).items()}
  assert shapes(traced.variables) == shapes(by_name)
