"""Sparsity statistics of the sparsified layers."""
import jax
import jax.numpy as jnp
from flax import traverse_util

from msp.sparsity.groups import GroupSpec


def sparsity_stats(params, spec: GroupSpec) -> dict[str, jax.Array]:
  """Per layer and total sparsity of exactly-zero groups and parameters.

  Returns alive_channels (L,) int, group_sparsity (L,) fraction of zero groups, group_sparsity_total (scalar,
  over all groups), param_sparsity (scalar, fraction of exactly-zero scalars among the grouped tensors).
  """
  alive = jnp.stack([jnp.sum(a) for a in spec.alive(params)])
  sizes = jnp.asarray([layer.num_groups for layer in spec.layers])
  flat = traverse_util.flatten_dict(params)
  # An ordered collection: iterating a set would order the ops by string hashes, which differ between processes
  # and so defeat the persistent compilation cache.
  paths = dict.fromkeys(p for layer in spec.layers for p in (*layer.kernels, *layer.coupled))
  zeros = sum(jnp.sum(flat[p] == 0) for p in paths)
  total = sum(flat[p].size for p in paths)
  return {
      "alive_channels": alive,
      "group_sparsity": (sizes - alive) / sizes,
      "group_sparsity_total": jnp.sum(sizes - alive) / jnp.sum(sizes),
      "param_sparsity": zeros / total,
  }
