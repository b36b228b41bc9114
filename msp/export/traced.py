"""Physical pruning of any traced network: its forward pass replayed with the dead channels cut out.

`prune_traced(apply, variables, *inputs)` traces `apply` (`msp.sparsity.tracing.trace`), finds in every removable
channel space the channels whose producers and coupled entries are all zero in `variables` (the dead channels, as the
prox leaves them), slices those channels out of every variable the space indexes (kernels' output and input axes,
biases, normalisation parameters and running statistics), and returns a function that replays the trace's primitives
on the smaller arrays. Shape parameters (broadcasts, reshapes, splits, a depthwise conv's group count) are recomputed
from the operands, so the replay runs at any batch size and under `jax.export` with a symbolic batch. Its outputs
equal `apply(variables, ...)` up to the float rounding of shorter sums, because the trace's zero pass proved every
removed channel zero wherever it is read.

A space whose channels are all dead keeps one zero channel (no tensor of width 0); `multiple_of` rounds each kept
count up with dead channels, lowest index first (`msp.export.prune.kept_channels`).
"""
import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np

from msp.export.prune import kept_channels
from msp.sparsity.tracing import Trace, reshape_groups, trace


@dataclasses.dataclass(frozen=True)
class TracedPruning:
  """The result of `prune_traced`: `forward(variables, *inputs)` (the replay; call it with `variables`), the pruned
  `variables` (the same tree, smaller arrays) and per space of the trace's graph its kept channels (`kept`)."""
  forward: Callable[..., Any]
  variables: Any
  kept: tuple[np.ndarray, ...]


def dead_channels(graph_trace: Trace, variables) -> list[np.ndarray]:
  """Per space of the trace's graph, (size,) bool: the channels whose producers' and coupled entries' slices are all
  zero in `variables` (the tree that was traced)."""
  leaves = dict(zip(graph_trace.tracer.leaf_paths, jax.tree.leaves(variables)))
  dead = []
  for space in graph_trace.graph.spaces:
    alive = np.zeros(space.size, bool)
    for member in (*space.producers, *space.coupled):
      value = np.moveaxis(np.asarray(leaves[member.path]), member.axis, 0)
      nonzero = np.any(value.reshape(value.shape[0], -1) != 0, axis=1)
      inside = member.channels >= 0
      np.logical_or.at(alive, member.channels[inside], nonzero[inside])
    dead.append(~alive)
  return dead


def prune_traced(apply: Callable[..., Any], variables, *inputs, multiple_of: int = 1) -> TracedPruning:
  """The physically pruned network of `apply(variables, *inputs)` (module docstring). apply: a pure function whose
  outputs are the network's predictions (e.g. `lambda v, x: model.apply(v, x, train=False)`); inputs: example
  inputs (arrays or ShapeDtypeStruct)."""
  graph_trace = trace(apply, variables, *inputs)
  kept = tuple(kept_channels(~dead, multiple_of) for dead in dead_channels(graph_trace, variables))
  keep = [np.isin(np.arange(space.size), k) for space, k in zip(graph_trace.graph.spaces, kept)]
  space, channel = graph_trace.channel_of.T
  node_kept = np.array([s < 0 or keep[s][c] for s, c in zip(space.tolist(), channel.tolist())], bool)
  tracer = graph_trace.tracer

  def positions(value: int, axis: int) -> np.ndarray:
    """The kept positions of a value along a labelled axis."""
    labels = tracer.values[value].labels[axis]
    return np.flatnonzero(np.where(labels >= 0, node_kept[np.maximum(labels, 0)], True))

  leaves = jax.tree.leaves(variables)
  pruned = []
  for value, leaf in zip(tracer.invars, leaves):
    for axis in tracer.values[value].labels:
      leaf = np.take(np.asarray(leaf), positions(value, axis), axis=axis)
    pruned.append(leaf)
  pruned_variables = jax.tree.unflatten(graph_trace.variables_tree, pruned)
  sizes = {(v, a): len(positions(v, a)) for v, value in enumerate(tracer.values) for a in value.labels}

  def forward(variables, *inputs):
    env = dict(zip(tracer.invars, [*jax.tree.leaves(variables), *jax.tree.leaves(inputs)]))
    env.update(tracer.const_values)
    for op in tracer.ops:
      args = [env[x] if isinstance(x, int) else x.val for x in op.ins]
      result = op.primitive.bind(*args, **_params(op, args, tracer, sizes))
      env.update(zip(op.outs, result if op.primitive.multiple_results else [result]))
    return jax.tree.unflatten(graph_trace.output_tree,
                              [env[x] if isinstance(x, int) else x.val for x in tracer.outvars])

  return TracedPruning(forward, pruned_variables, kept)


def _params(op, args: list, tracer, sizes: dict) -> dict:
  """`op`'s parameters for operands `args` of the pruned network: shape parameters follow the operands' shapes
  (a pruned channel count, another batch size); labelled axes a shape parameter creates take their pruned size."""
  params = dict(op.params)
  out, traced = op.outs[0], tracer.values[op.outs[0]].shape
  if op.name == "broadcast_in_dim":
    source = tracer.values[op.ins[0]].shape if isinstance(op.ins[0], int) else ()
    shape = list(traced)
    for axis, target in enumerate(op.params["broadcast_dimensions"]):
      if source[axis] == traced[target]:
        shape[target] = args[0].shape[axis]
    params["shape"] = tuple(shape)
  elif op.name == "reshape":
    source = tracer.values[op.ins[0]].shape
    new = list(traced)
    for (a0, a1), (b0, b1) in reshape_groups(source, traced):
      total = math.prod(args[0].shape[a0:a1])
      group = [sizes.get((out, b), traced[b]) for b in range(b0, b1)]
      free = next((i for i in range(b1 - b0) if (out, b0 + i) not in sizes and traced[b0 + i] > 1), None)
      if free is not None:  # e.g. a batch axis merged or split: whatever the labelled axes leave
        group[free] = 1
        group[free] = total // math.prod(group)
      new[b0:b1] = group
    params["new_sizes"], params["dimensions"] = tuple(new), None
  elif op.name == "split":
    axis = op.params["axis"]
    params["sizes"] = tuple(sizes.get((o, axis), tracer.values[o].shape[axis]) for o in op.outs)
  elif op.name == "slice":
    source = tracer.values[op.ins[0]].shape
    limits = list(op.params["limit_indices"])
    for axis, (size, limit) in enumerate(zip(source, limits)):
      if op.params["start_indices"][axis] == 0 and limit == size:  # a whole axis: whatever it now holds
        limits[axis] = args[0].shape[axis]
    params["limit_indices"] = tuple(limits)
  elif op.name == "conv_general_dilated" and op.params["feature_group_count"] > 1:
    params["feature_group_count"] = args[0].shape[op.params["dimension_numbers"].lhs_spec[1]]
  return params
