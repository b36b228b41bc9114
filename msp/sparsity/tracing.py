"""Channel dependencies of any JAX network, found by tracing its forward pass.

`trace_channels(apply, variables, *inputs)` traces `apply(variables, *inputs)` to a jaxpr and follows every index of
every axis of every variable through it. Two indices are one *channel* when an operation ties them: an elementwise
op between tensors (a conv's output, its BatchNorm's scale, a residual add), a contraction (a conv's input feature
axis and its kernel's input axis), a broadcast, transpose, reshape or concatenation that moves them. A *channel
space* is a set of such channels with at least one *producer*: a kernel whose output axis makes them (a conv's `O`,
a dense layer's output). Everything else a space touches is sorted by role:

  producers   kernel output axes that write the channels (a residual stream has several);
  coupled     other `params` entries indexed by the channels (biases, normalisation scales and offsets): zeroed
              with them, so that a zero group leaves an exactly zero channel;
  consumers   kernel input axes that read the channels (the next conv's `I`, a dense layer's rows, a head);
  statistics  entries of other collections (BatchNorm's running mean and variance), removed with the channels.

A space is removable only if zeroing its producers and coupled entries makes the channels exactly zero wherever they
are read: every elementwise op on the way must keep a zero channel zero (relu, gelu, silu, max-pooling, a sum of
zero terms do; softplus, sigmoid, `+ constant` do not), no op may reduce over the channels (LayerNorm, a mean over
features) or slice them, and they must not be an output of the network. Where that fails, or an op is not one the
tracer knows, the space is refused with a message naming the op, where it is called and the parameters concerned
(`ChannelGraph.refused`): never a silently wrong group.

`ChannelGraph.contractions` lists every conv and dense layer with its FLOPs per (input, output) channel pair and the
channels it reads and writes, from which costs follow.
"""
import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core as jcore

Path = tuple[str, ...]

# Elementwise ops whose output is zero where every operand is zero (sums, extrema, selections) ...
_ZERO_IF_ALL = {"add", "sub", "max", "min", "select_n", "clamp", "add_any", "atan2", "rem", "or", "xor"}
# ... where one operand is zero (products) ...
_ZERO_IF_ANY = {"mul", "and"}
# ... and unary ops that map 0 to 0.
_KEEPS_ZERO = {"neg", "abs", "sign", "sqrt", "cbrt", "tanh", "sin", "tan", "asin", "atan", "sinh", "asinh", "atanh",
               "erf", "erf_inv", "expm1", "log1p", "floor", "ceil", "round", "convert_element_type", "copy", "copy_p",
               "reduce_precision", "square", "real", "imag", "sharding_constraint", "optimization_barrier"}
# Unary ops (or ops with constant operands) that do not: a zero channel stops being zero.
_BREAKS_ZERO = {"exp", "exp2", "log", "logistic", "cos", "cosh", "acos", "rsqrt", "is_finite", "not", "lgamma",
                "digamma", "bessel_i0e", "bessel_i1e", "population_count", "clz", "eq", "ge", "le"}
_COMPARE = {"gt", "lt", "ne"}  # zero against a zero operand gives False (0)
_REDUCE = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "argmax", "argmin"}
_WINDOW = {"reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"}
_CUMULATIVE = {"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"}
_POWERS = {"div", "pow", "integer_pow"}  # zero where the base is (for a positive exponent)
# The label pass's handler of each op of a family (ops with a handler of their own: `_Tracer._label_<name>`).
_FAMILY_HANDLERS = {**dict.fromkeys(_ZERO_IF_ALL | _ZERO_IF_ANY | _KEEPS_ZERO | _BREAKS_ZERO | _COMPARE | _POWERS,
                                    "_label_elementwise"),
                    **dict.fromkeys(_REDUCE, "_label_reduce"), **dict.fromkeys(_WINDOW, "_label_window"),
                    **dict.fromkeys(_CUMULATIVE, "_label_cumulative")}
_STRUCTURAL = {"broadcast_in_dim", "transpose", "squeeze", "reshape", "slice", "pad", "rev"}
_CASTS = {"convert_element_type", "copy", "copy_p", "reduce_precision", "sharding_constraint"}
_CALLS = ("jaxpr", "call_jaxpr", "fun_jaxpr")  # parameters holding the jaxpr of a call that is inlined


@dataclasses.dataclass(frozen=True, eq=False)  # compared by identity (it holds an array)
class Member:
  """One axis of one variable that a channel space indexes.

  path: the variable's path, collection first (("params", "Conv_0", "kernel")); shape: its shape; axis: the axis
  along which the space runs; channels: (size of
  the axis,) int, the space's channel that each position carries (-1: a position of another space or none, e.g. the
  rows of a dense layer that read a concatenated input).
  """
  path: Path
  shape: tuple[int, ...]
  axis: int
  channels: np.ndarray

  @property
  def name(self) -> str:
    return "/".join(self.path)

  @property
  def identity(self) -> bool:
    """Whether position c carries channel c at every position (a plain kernel, bias or scale axis)."""
    return bool(np.array_equal(self.channels, np.arange(len(self.channels))))


@dataclasses.dataclass(frozen=True)
class ChannelSpace:
  """Channels that are removed together (module docstring): `size` of them; producers in execution order; `owner`:
  per coupled member, the index of the producer it belongs to before any residual add joins producers (its own
  conv's bias or norm), -1 when it belongs to several."""
  size: int
  producers: tuple[Member, ...]
  coupled: tuple[Member, ...]
  consumers: tuple[Member, ...]
  statistics: tuple[Member, ...]
  owner: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Refusal:
  """A channel space that cannot be removed: its producers' paths, and why (the op and where it is called)."""
  producers: tuple[str, ...]
  reason: str

  @property
  def message(self) -> str:
    return f"the channels of {', '.join(self.producers)} cannot be removed: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Contraction:
  """A conv or dense layer: its kernel's path, FLOPs per (input channel, output channel) pair for the traced inputs
  (2 per multiply-add), per input and output position the (space index, channel) it carries ((-1, -1): none), and
  the kernels whose outputs its input holds (`writers`: of a residual stream, those upstream of where it reads)."""
  kernel: Path
  flops_per_pair: float
  inputs: np.ndarray
  outputs: np.ndarray
  writers: tuple[Path, ...]


@dataclasses.dataclass(frozen=True)
class ChannelGraph:
  """What `trace_channels` found: removable spaces, refused ones, the spaces that are outputs of the network (never
  removable, and not an error), and the contractions."""
  spaces: tuple[ChannelSpace, ...]
  refused: tuple[Refusal, ...]
  outputs: tuple[tuple[str, ...], ...]
  contractions: tuple[Contraction, ...]


class _UnionFind:
  """Union-find over integer nodes; `join` merges two equally long arrays of nodes elementwise."""

  def __init__(self):
    self.parent: list[int] = []

  def add(self, count: int) -> np.ndarray:
    start = len(self.parent)
    self.parent.extend(range(start, start + count))
    return np.arange(start, start + count)

  def find(self, node: int) -> int:
    root = node
    while self.parent[root] != root:
      root = self.parent[root]
    while self.parent[node] != root:
      self.parent[node], node = root, self.parent[node]
    return root

  def join(self, a: np.ndarray, b: np.ndarray) -> None:
    for x, y in zip(a.tolist(), b.tolist()):
      if x >= 0 and y >= 0:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
          self.parent[max(rx, ry)] = min(rx, ry)

  def roots(self, nodes: np.ndarray) -> np.ndarray:
    return np.array([self.find(n) if n >= 0 else -1 for n in nodes.tolist()], dtype=np.int64)


@dataclasses.dataclass
class _Value:
  """A traced array: its shape, labels (axis → (size,) node per position, -1 none), whether it is computed from the
  inputs (an activation, not from variables alone), and in the zero pass, per labelled axis, which positions are
  zero when their spaces are zeroed (`zero`), whether it is all zeros (`null`) and what broke a zero (`broken`);
  `writers`: the kernels whose outputs flowed into it (a residual stream's upstream producers)."""
  shape: tuple[int, ...]
  labels: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
  active: bool = False
  zero: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
  null: bool = False
  broken: str | None = None
  writers: frozenset[int] | None = None  # the kernels (leaf indices) whose outputs flowed into it


@dataclasses.dataclass(frozen=True)
class _Op:
  """One primitive application of the inlined jaxpr: name, parameters, operands (an int: a value's index; else a
  `Literal`), result values, where it is called, and the primitive."""
  name: str
  params: dict
  ins: tuple
  outs: tuple[int, ...]
  where: str
  primitive: Any = None


@dataclasses.dataclass(frozen=True)
class Literal:
  """A literal operand of the inlined jaxpr (its value `val`); kept apart from value ids, which are ints, because
  jax's literals can be int subclasses."""
  val: Any

  def __array__(self, dtype=None, copy=None):
    return np.asarray(self.val, dtype)


def _where(eqn, outer: str) -> str:
  """Where `eqn` is called ("file:line (function)"); `outer`, the place of the call it is inlined from, when jax
  names none (the inside of `jax.nn.softplus`, say)."""
  try:
    from jax._src import source_info_util  # pylint: disable=import-outside-toplevel
    return source_info_util.summarize(eqn.source_info) or outer
  except Exception:  # pylint: disable=broad-except  (a private module: any failure only loses the place)
    return outer


def _path_names(path) -> Path:
  return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


class _Tracer:
  """Inlines a closed jaxpr into `_Op`s, then runs the label pass and the zero pass over them."""

  def __init__(self, closed: jcore.ClosedJaxpr, leaf_paths: Sequence[Path], num_variables: int):
    self.values: list[_Value] = []
    self.ops: list[_Op] = []
    self.nodes = _UnionFind()
    self.local = _UnionFind()  # joined by everything but elementwise ops between two activations
    self.node_leaf: list[tuple[int, int, int]] = []  # node → (leaf, axis, position)
    self.role: dict[int, str] = {}  # node → "producer" / "consumer"
    self.refusals: dict[int, str] = {}  # node → reason (first one kept)
    self.contractions: list[tuple[Path, float, np.ndarray, np.ndarray]] = []
    self.leaf_paths = leaf_paths
    self.origin: dict[int, int] = {}  # value → the variable (leaf index) it is, possibly cast
    self.first_use: dict[int, int] = {}  # leaf index → index of the first op that reads it
    invars = []
    for i, var in enumerate(closed.jaxpr.invars):
      invars.append(self._new(var.aval.shape, active=i >= num_variables))
      if i < num_variables:
        for axis, size in enumerate(var.aval.shape):
          if size > 1:
            ids = self.nodes.add(size)
            self.local.add(size)
            self.node_leaf += [(i, axis, p) for p in range(size)]
            self.values[invars[-1]].labels[axis] = ids
        self.origin[invars[-1]] = i
    self.invars = invars
    self.const_values: dict[int, Any] = {}  # value → a constant captured by the jaxpr
    consts = self._consts(closed.consts)
    self.outvars = self._inline(closed.jaxpr, invars, consts)

  def _consts(self, consts: Sequence) -> list[int]:
    ids = [self._new(np.shape(c)) for c in consts]
    self.const_values.update(zip(ids, consts))
    return ids

  def _new(self, shape, active: bool = False) -> int:
    self.values.append(_Value(tuple(shape), active=active))
    return len(self.values) - 1

  def _inline(self, jaxpr: jcore.Jaxpr, ins: Sequence, consts: Sequence,
              outer: str = "a place jax does not name") -> list:
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, ins))
    read = lambda a: Literal(a.val) if isinstance(a, jcore.Literal) else env[a]
    for eqn in jaxpr.eqns:
      operands = [read(a) for a in eqn.invars]
      where = _where(eqn, outer)
      sub = next((eqn.params[k] for k in _CALLS if k in eqn.params), None)
      if sub is not None:
        closed = sub if isinstance(sub, jcore.ClosedJaxpr) else jcore.ClosedJaxpr(sub, ())
        const_ids = self._consts(closed.consts)
        count = len(closed.jaxpr.invars)
        outs = self._inline(closed.jaxpr, operands[len(operands) - count:], const_ids, where)
      else:
        outs = [self._new(v.aval.shape) for v in eqn.outvars]
        self.ops.append(_Op(eqn.primitive.name, dict(eqn.params), tuple(operands), tuple(outs), where,
                            eqn.primitive))
      env.update(zip(eqn.outvars, outs))
    return [read(a) for a in jaxpr.outvars]

  # -- label pass ---------------------------------------------------------------------------------------------------

  def _labelled(self, x) -> dict[int, np.ndarray]:
    return self.values[x].labels if isinstance(x, int) else {}

  def _refuse(self, nodes: np.ndarray, reason: str) -> None:
    for n in nodes.tolist():
      if n >= 0:
        self.refusals.setdefault(n, reason)

  def _refuse_all(self, op: _Op, reason: str) -> None:
    for x in op.ins:
      for ids in self._labelled(x).values():
        self._refuse(ids, f"{reason} (`{op.name}` at {op.where})")

  def label(self) -> None:
    for index, op in enumerate(self.ops):
      for x in op.ins:
        if isinstance(x, int) and x in self.origin:
          self.first_use.setdefault(self.origin[x], index)
      if op.name in _CASTS and isinstance(op.ins[0], int) and op.ins[0] in self.origin:
        self.origin[op.outs[0]] = self.origin[op.ins[0]]
      family = _FAMILY_HANDLERS.get(op.name, "_label_unknown")
      (getattr(self, f"_label_{op.name}", None) or getattr(self, family))(op)
      upstream = frozenset().union(*(self.values[x].writers or () for x in op.ins if isinstance(x, int)))
      for out in op.outs:
        if self.values[out].writers is None:
          self.values[out].writers = upstream
    for x in self.outvars:
      for ids in self._labelled(x).values():
        self._refuse(ids, "output")

  def _label_unknown(self, op: _Op) -> None:
    self._refuse_all(op, "an op the tracer does not follow channels through")

  def _label_elementwise(self, op: _Op, skip: int | None = None) -> None:
    """Operands' labels along each axis (but `skip`) are the same channels; a residual add (two activations) joins
    them in `nodes` only."""
    out = self.values[op.outs[0]]
    out.active = any(isinstance(x, int) and self.values[x].active for x in op.ins)
    for axis, size in enumerate(out.shape):
      if axis == skip:
        continue
      found = [(self.values[x].labels[axis], self.values[x].active) for x in op.ins
               if isinstance(x, int) and axis in self.values[x].labels and self.values[x].shape[axis] == size]
      if not found:
        continue
      first, first_active = found[0]
      for ids, active in found[1:]:
        self.nodes.join(first, ids)
        if not (active and first_active):  # a residual add joins two producers: not in the local structure
          self.local.join(first, ids)
      out.labels[axis] = first

  def _passing(self, op: _Op) -> tuple[_Value, _Value]:
    """(operand, result) of a one-operand op; the result is an activation if the operand is."""
    source, out = self.values[op.ins[0]], self.values[op.outs[0]]
    out.active = source.active
    return source, out

  def _label_broadcast_in_dim(self, op: _Op) -> None:
    source, out = self._passing(op)
    for axis, target in enumerate(op.params["broadcast_dimensions"]):
      if axis in source.labels and source.shape[axis] == out.shape[target]:
        out.labels[target] = source.labels[axis]

  def _label_transpose(self, op: _Op) -> None:
    source, out = self._passing(op)
    for target, axis in enumerate(op.params["permutation"]):
      if axis in source.labels:
        out.labels[target] = source.labels[axis]

  def _label_rev(self, op: _Op) -> None:
    source, out = self._passing(op)
    for axis, ids in source.labels.items():
      out.labels[axis] = ids[::-1].copy() if axis in op.params["dimensions"] else ids

  def _label_squeeze(self, op: _Op) -> None:
    source, out = self._passing(op)
    kept = [a for a in range(len(source.shape)) if a not in op.params["dimensions"]]
    for target, axis in enumerate(kept):
      if axis in source.labels:
        out.labels[target] = source.labels[axis]

  def _label_reshape(self, op: _Op) -> None:
    source, out = self._passing(op)
    if not source.labels:
      return
    for (a0, a1), (b0, b1) in reshape_groups(source.shape, out.shape):
      labelled = [a for a in range(a0, a1) if a in source.labels]
      if not labelled:
        continue
      if len(labelled) > 1:
        self._refuse_all(op, "a reshape that merges two channel axes")
        continue
      axis = labelled[0]
      grid = np.broadcast_to(source.labels[axis].reshape([-1 if a == axis else 1 for a in range(a0, a1)]),
                             source.shape[a0:a1]).reshape(out.shape[b0:b1])
      explained = False
      for target in range(b0, b1):
        if out.shape[target] == 1:
          continue
        moved = np.moveaxis(grid, target - b0, 0).reshape(out.shape[target], -1)
        if (moved == moved[:, :1]).all():  # the labels vary along this axis alone
          out.labels[target] = moved[:, 0].copy()
          explained = True
      if not explained:
        self._refuse(source.labels[axis], f"a reshape that spreads channels over several axes (`reshape` at "
                                          f"{op.where})")

  def _label_reduce(self, op: _Op) -> None:
    source, out = self._passing(op)
    axes = op.params["axes"]
    for axis in axes:
      if axis in source.labels:
        self._refuse(source.labels[axis], f"`{op.name}` over the channels at {op.where} (e.g. a normalisation "
                                          f"over features, whose result depends on their number)")
    kept = [a for a in range(len(source.shape)) if a not in axes]
    for target, axis in enumerate(kept):
      if axis in source.labels:
        out.labels[target] = source.labels[axis]

  def _label_window(self, op: _Op) -> None:
    source, out = self._passing(op)
    window, strides = op.params["window_dimensions"], op.params["window_strides"]
    for axis, ids in source.labels.items():
      if window[axis] != 1 or strides[axis] != 1 or tuple(op.params["padding"][axis]) != (0, 0):
        self._refuse(ids, f"`{op.name}` pools over the channels at {op.where}")
      else:
        out.labels[axis] = ids

  def _label_cumulative(self, op: _Op) -> None:
    source, out = self._passing(op)
    for axis, ids in source.labels.items():
      if axis == op.params["axis"]:
        self._refuse(ids, f"`{op.name}` over the channels at {op.where}")
      else:
        out.labels[axis] = ids

  def _label_concatenate(self, op: _Op) -> None:
    out = self.values[op.outs[0]]
    dim = op.params["dimension"]
    parts = []
    for x in op.ins:
      value = self.values[x] if isinstance(x, int) else None
      size = value.shape[dim] if value else 1
      parts.append(value.labels.get(dim, np.full(size, -1)) if value else np.full(size, -1))
    self._label_elementwise(op, skip=dim)
    if any((p >= 0).any() for p in parts):
      out.labels[dim] = np.concatenate(parts)

  def _label_pad(self, op: _Op) -> None:
    source, out = self._passing(op)
    for axis, ids in source.labels.items():
      if tuple(op.params["padding_config"][axis]) != (0, 0, 0):
        self._refuse(ids, f"`pad` along the channels at {op.where}")
      else:
        out.labels[axis] = ids

  def _label_slice(self, op: _Op) -> None:
    source, out = self._passing(op)
    for axis, ids in source.labels.items():
      if out.shape[axis] != source.shape[axis]:
        self._refuse(ids, f"`slice` of the channels at {op.where}")
      else:
        out.labels[axis] = ids

  def _label_split(self, op: _Op) -> None:
    source = self.values[op.ins[0]]
    axis, start = op.params["axis"], 0
    for out_id in op.outs:
      out = self.values[out_id]
      out.active = source.active
      for a, ids in source.labels.items():
        out.labels[a] = ids[start:start + out.shape[axis]] if a == axis else ids
      start += out.shape[axis]

  def _label_conv_general_dilated(self, op: _Op) -> None:
    lhs, rhs, out = (self.values[op.ins[0]], self.values[op.ins[1]], self.values[op.outs[0]])
    numbers = op.params["dimension_numbers"]
    (_, lhs_feature, *lhs_space), (rhs_out, rhs_in, *_), (_, out_feature, *out_space) = (
        numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec)
    out.active = True
    groups = op.params["feature_group_count"]
    for axis in (*lhs_space, numbers.lhs_spec[0]):
      if axis in lhs.labels:
        self._refuse(lhs.labels[axis], f"a convolution over channel-indexed spatial axes at {op.where}")
    if op.params["batch_group_count"] != 1 or groups not in (1, lhs.shape[lhs_feature]) or (
        groups > 1 and rhs.shape[rhs_out] != groups):
      self._refuse_all(op, "a grouped convolution other than depthwise with one output per channel")
      return
    if groups > 1:  # depthwise: output channel c reads input channel c alone
      ids = [v.labels[a] for v, a in ((lhs, lhs_feature), (rhs, rhs_out)) if a in v.labels]
      for other in ids[1:]:
        self.nodes.join(ids[0], other)
        self.local.join(ids[0], other)
      if ids:
        out.labels[out_feature] = ids[0]
      if rhs_out in rhs.labels and not rhs.active:
        self._mark(rhs.labels[rhs_out], "producer")
      if op.ins[1] in self.origin:
        out.writers = (lhs.writers or frozenset()) | {self.origin[op.ins[1]]}
      return
    self._contract(lhs.labels.get(lhs_feature), rhs.labels.get(rhs_in), lhs, rhs)
    if rhs_out in rhs.labels:
      out.labels[out_feature] = rhs.labels[rhs_out]
      if not rhs.active:
        self._mark(rhs.labels[rhs_out], "producer")
    spatial = float(np.prod([out.shape[a] for a in out_space]) * np.prod([rhs.shape[a] for a in numbers.rhs_spec[2:]]))
    self._record_contraction(op.ins[1], 2.0 * spatial * out.shape[numbers.out_spec[0]], lhs,
                             lhs.labels.get(lhs_feature), rhs.labels.get(rhs_out), lhs.shape[lhs_feature], out,
                             out.shape[out_feature])

  def _label_dot_general(self, op: _Op) -> None:
    lhs, rhs, out = self.values[op.ins[0]], self.values[op.ins[1]], self.values[op.outs[0]]
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = op.params["dimension_numbers"]
    out.active = lhs.active or rhs.active
    for l_axis, r_axis in zip(lhs_contract, rhs_contract):
      self._contract(lhs.labels.get(l_axis), rhs.labels.get(r_axis), lhs, rhs)
    target = 0
    for l_axis, r_axis in zip(lhs_batch, rhs_batch):
      ids = [v.labels[a] for v, a in ((lhs, l_axis), (rhs, r_axis)) if a in v.labels]
      for other in ids[1:]:
        self.nodes.join(ids[0], other)
      if ids:
        out.labels[target] = ids[0]
      target += 1
    free = [(lhs, a) for a in range(len(lhs.shape)) if a not in (*lhs_contract, *lhs_batch)] + [
        (rhs, a) for a in range(len(rhs.shape)) if a not in (*rhs_contract, *rhs_batch)]
    for value, axis in free:
      if axis in value.labels:
        out.labels[target] = value.labels[axis]
        if not value.active and (lhs.active or rhs.active):
          self._mark(value.labels[axis], "producer")
      target += 1
    if len(lhs_contract) == 1 and not lhs_batch and lhs.active != rhs.active:  # a dense layer: x · kernel
      (x, x_axis), (kernel, k_axis) = ((lhs, lhs_contract[0]), (op.ins[1], rhs_contract[0])) if lhs.active else (
          (rhs, rhs_contract[0]), (op.ins[0], lhs_contract[0]))
      k_value = self.values[kernel]
      if len(k_value.shape) == 2:
        rows = float(np.prod(x.shape) / x.shape[x_axis])
        k_out = 1 - k_axis
        self._record_contraction(kernel, 2.0 * rows, x, x.labels.get(x_axis), k_value.labels.get(k_out),
                                 x.shape[x_axis], out, k_value.shape[k_out])

  def _contract(self, a: np.ndarray | None, b: np.ndarray | None, va: _Value, vb: _Value) -> None:
    """An axis summed over: the two operands' positions are the same channels; a kernel's side reads them."""
    if a is not None and b is not None:
      self.nodes.join(a, b)
      self.local.join(a, b)
    for ids, value in ((a, va), (b, vb)):
      if ids is not None and not value.active:
        self._mark(ids, "consumer")

  def _mark(self, ids: np.ndarray, role: str) -> None:
    for n in ids.tolist():
      if n >= 0:
        self.role.setdefault(n, role)

  def _record_contraction(self, kernel, flops_per_pair: float, source: _Value, inputs, outputs, in_size: int,
                          out: _Value, out_size: int) -> None:
    """Records a conv or dense layer whose kernel is a variable (possibly cast) reading `source`; `out`, its result,
    is then written by that kernel alone."""
    if not isinstance(kernel, int) or kernel not in self.origin:  # a kernel computed from several variables
      return
    full = lambda ids, size: ids if ids is not None else np.full(size, -1)
    writers = tuple(sorted(source.writers or ()))
    self.contractions.append((self.leaf_paths[self.origin[kernel]], flops_per_pair, full(inputs, in_size),
                              full(outputs, out_size), tuple(self.leaf_paths[w] for w in writers)))
    out.writers = frozenset({self.origin[kernel]})

  # -- zero pass ----------------------------------------------------------------------------------------------------

  def zeros(self, zeroed: Callable[[int], bool]) -> None:
    """Marks, per labelled axis of each value, the positions that are zero when their spaces are zeroed (`zeroed`:
    node → whether zeroing its space zeroes that variable entry), and refuses the spaces whose channels are not
    zero where a contraction reads them."""
    for x in self.invars:
      value = self.values[x]
      value.zero = {axis: np.array([zeroed(n) for n in ids.tolist()]) for axis, ids in value.labels.items()}
    for op in self.ops:
      self._zero(op)

  def _is_null(self, x) -> bool:
    """Whether operand `x` is all zeros whatever the variables are (a literal 0, `jnp.zeros`)."""
    return self.values[x].null if isinstance(x, int) else bool(np.all(np.asarray(x) == 0))

  def _operand_zero(self, x, axis: int, size: int) -> np.ndarray:
    """(size,) bool: which positions of operand `x` along `axis` of the op's output are zero when zeroed."""
    if isinstance(x, int) and axis in self.values[x].zero and self.values[x].shape[axis] == size:
      return self.values[x].zero[axis]
    return np.full(size, self._is_null(x))

  def _zero(self, op: _Op) -> None:
    name, outs = op.name, [self.values[o] for o in op.outs]
    out = outs[0]
    if name in _STRUCTURAL or name in _KEEPS_ZERO or name in _WINDOW or name in _CUMULATIVE or name in _REDUCE - {
        "argmax", "argmin"}:
      source = self.values[op.ins[0]] if isinstance(op.ins[0], int) else None
      if source is not None:
        self._carry(source, out)
        out.null, out.broken = source.null and name != "pad", source.broken
    elif name in _ZERO_IF_ALL | _ZERO_IF_ANY | _COMPARE | _POWERS:
      self._zero_elementwise(op, out)
    elif name == "concatenate":
      dim = op.params["dimension"]
      for axis in out.labels:
        parts = [self._operand_zero(x, dim, self.values[x].shape[dim] if isinstance(x, int) else 1) for x in op.ins]
        out.zero[axis] = np.concatenate(parts) if axis == dim else np.logical_and.reduce(
            [self._operand_zero(x, axis, out.shape[axis]) for x in op.ins])
    elif name == "split":
      start, split_axis = 0, op.params["axis"]
      for o in outs:
        for axis in o.labels:
          z = self._operand_zero(op.ins[0], axis, self.values[op.ins[0]].shape[axis])
          o.zero[axis] = z[start:start + o.shape[split_axis]] if axis == split_axis else z
        start += o.shape[split_axis]
    elif name == "conv_general_dilated":
      numbers = op.params["dimension_numbers"]
      (rhs_out, rhs_in), lhs_feature, out_feature = numbers.rhs_spec[:2], numbers.lhs_spec[1], numbers.out_spec[1]
      written = self._operand_zero(op.ins[1], rhs_out, out.shape[out_feature])
      if op.params["feature_group_count"] > 1:  # depthwise: zero where the input or the kernel is
        written = written | self._operand_zero(op.ins[0], lhs_feature, out.shape[out_feature])
      else:
        self._check_read(op, lhs_feature, rhs_in)
      if out_feature in out.labels:
        out.zero[out_feature] = written
    elif name == "dot_general":
      lhs, rhs = (self.values[x] for x in op.ins)
      (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = op.params["dimension_numbers"]
      for l_axis, r_axis in zip(lhs_contract, rhs_contract):
        self._check_read(op, l_axis, r_axis)
      free = [(op.ins[0], a) for a in lhs_batch] + [
          (op.ins[0], a) for a in range(len(lhs.shape)) if a not in (*lhs_contract, *lhs_batch)] + [
          (op.ins[1], a) for a in range(len(rhs.shape)) if a not in (*rhs_contract, *rhs_batch)]
      for target, (x, axis) in enumerate(free):
        if target in out.labels:
          out.zero[target] = self._operand_zero(x, axis, out.shape[target])
    else:  # _BREAKS_ZERO, or an op the label pass refused
      for o in outs:
        o.zero = {axis: np.zeros(o.shape[axis], bool) for axis in o.labels}
      had_zeros = any(z.any() for x in op.ins if isinstance(x, int) for z in self.values[x].zero.values())
      out.broken = f"`{name}` at {op.where} maps zero to a non-zero value" if had_zeros else None

  def _zero_elementwise(self, op: _Op, out: _Value) -> None:
    """Sums, extrema and selections are zero where all their terms are; products where one factor is; a quotient
    or power where its base is (for a positive exponent); a comparison (>, <, ≠) with an all-zero operand where the
    other operand is."""
    name = op.name
    operands = op.ins[1:] if name == "select_n" else op.ins
    if name in ("div", "pow"):
      positive = name == "div" or (not isinstance(op.ins[1], int) and bool(np.all(np.asarray(op.ins[1]) > 0)))
      operands = op.ins[:1] if positive else ()
    elif name == "integer_pow":
      operands = op.ins if op.params["y"] > 0 else ()
    elif name in _COMPARE:
      nulls = [self._is_null(x) for x in op.ins]
      operands = [x for x, null in zip(op.ins, nulls) if not null] if any(nulls) else ()
    any_of = name in _ZERO_IF_ANY
    for axis in out.labels:
      zs = [self._operand_zero(x, axis, out.shape[axis]) for x in operands] or [np.zeros(out.shape[axis], bool)]
      out.zero[axis] = np.logical_or.reduce(zs) if any_of else np.logical_and.reduce(zs)
    nulls = [self._is_null(x) for x in operands]
    out.null = bool(nulls) and (any(nulls) if any_of else all(nulls))
    out.broken = next((self.values[x].broken for x in operands if isinstance(x, int) and self.values[x].broken), None)
    lost = any(self._operand_zero(x, axis, out.shape[axis]).any() and not out.zero[axis].all()
               for x in op.ins for axis in out.labels)
    if lost and out.broken is None and name not in _COMPARE:
      out.broken = f"`{name}` at {op.where} makes a zero channel non-zero"

  def _carry(self, source: _Value, out: _Value) -> None:
    """The zeros of a structural op's operand, moved as its labels moved (a label is a node, zero or not
    wherever it is)."""
    zero_of = {}
    for axis, ids in source.labels.items():
      z = source.zero.get(axis, np.zeros(len(ids), bool))
      zero_of.update({n: bool(v) for n, v in zip(ids.tolist(), z.tolist()) if n >= 0})
    for axis, ids in out.labels.items():
      out.zero[axis] = np.array([zero_of.get(n, source.null) for n in ids.tolist()], bool)

  def _check_read(self, op: _Op, l_axis: int, r_axis: int) -> None:
    """A contraction over (l_axis of the first operand, r_axis of the second) reads channels: removing one changes
    nothing only if it is zero on one side. Refuses the channels an activation brings in that are not."""
    lhs, rhs = (self.values[x] for x in op.ins[:2])
    for (value, axis), (other, other_axis) in (((lhs, l_axis), (rhs, r_axis)), ((rhs, r_axis), (lhs, l_axis))):
      if axis not in value.labels or not value.active:
        continue
      size = value.shape[axis]
      z = value.zero.get(axis, np.zeros(size, bool))
      bad = ~(z | other.zero.get(other_axis, np.full(size, other.null)))
      if bad.any():
        why = value.broken or "a term that zeroing them does not zero is added to them"
        self._refuse(value.labels[axis][bad], f"they are not zero where `{op.name}` at {op.where} reads them: {why}")


def reshape_groups(old: Sequence[int], new: Sequence[int]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
  """The minimal runs of axes ((a0, a1) of `old`, (b0, b1) of `new`) whose sizes have equal products."""
  groups, a, b = [], 0, 0
  while a < len(old) or b < len(new):
    a0, b0 = a, b
    pa = old[a] if a < len(old) else 1
    pb = new[b] if b < len(new) else 1
    a, b = a + 1, b + 1
    while pa != pb:
      if pa < pb:
        pa *= old[a]
        a += 1
      else:
        pb *= new[b]
        b += 1
    while a < len(old) and old[a] == 1 and (b >= len(new) or new[b] != 1):
      a += 1
    while b < len(new) and new[b] == 1 and (a >= len(old) or old[a] != 1):
      b += 1
    groups.append(((a0, min(a, len(old))), (b0, min(b, len(new)))))
  return groups


@dataclasses.dataclass(frozen=True)
class Trace:
  """A traced forward pass: its `graph`, and what replaying it with channels removed needs (`msp.export.traced`):
  the inlined ops, the variables' and inputs' value ids, the outputs' (and their pytree structure), and per node
  the (space, channel) it belongs to among `graph.spaces` ((-1, -1): none)."""
  graph: ChannelGraph
  tracer: _Tracer
  channel_of: np.ndarray
  variables_tree: Any
  output_tree: Any


def trace(apply: Callable[..., Any], variables, *inputs) -> Trace:
  """`trace_channels`, keeping the trace itself."""
  flat, variables_tree = jax.tree_util.tree_flatten_with_path(variables)
  leaf_paths = [_path_names(path) for path, _ in flat]
  closed, output_shapes = jax.make_jaxpr(apply, return_shape=True)(variables, *inputs)
  tracer = _Tracer(closed, leaf_paths, len(leaf_paths))
  tracer.label()
  graph, channel_of = _graph(tracer, leaf_paths)
  return Trace(graph, tracer, channel_of, variables_tree, jax.tree.structure(output_shapes))


def trace_channels(apply: Callable[..., Any], variables, *inputs) -> ChannelGraph:
  """The channel spaces of the network `apply(variables, *inputs)` (module docstring).

  apply: a pure function, e.g. `lambda v, x: model.apply(v, x, train=False)` for a Flax module, whose outputs are
  the network's predictions; variables: its variables (nested dicts of arrays, or jax.ShapeDtypeStruct: only shapes
  are used); inputs: example inputs (arrays or ShapeDtypeStruct), whose shapes set the FLOPs per pair. Nothing is
  computed on arrays.
  """
  return trace(apply, variables, *inputs).graph


def _graph(tracer: _Tracer, leaf_paths: Sequence[Path]) -> tuple[ChannelGraph, np.ndarray]:
  """Groups the finished label pass's channels into spaces, runs the zero pass and sorts each space's members.
  Returns the graph and, per node, its (space, channel) ((-1, -1): in no space)."""
  root_of = tracer.nodes.roots(np.arange(len(tracer.nodes.parent)))
  channel_nodes: dict[int, list[int]] = {}  # channel (root) → its nodes
  for n, root in enumerate(root_of.tolist()):
    channel_nodes.setdefault(root, []).append(n)
  role = lambda n: tracer.role.get(n)
  axis_of = lambda n: tracer.node_leaf[n][:2]
  produced = {root: tuple(sorted({axis_of(n) for n in ns if role(n) == "producer"}, key=lambda k: _first(tracer, k)))
              for root, ns in channel_nodes.items()}
  is_params = lambda n: leaf_paths[tracer.node_leaf[n][0]][0] == "params"
  tracer.zeros(lambda n: bool(produced[int(root_of[n])]) and is_params(n) and role(n) != "consumer")

  by_producers: dict[tuple, list[int]] = {}  # the producer axes → the channels they write
  for root, producers in produced.items():
    if producers:
      by_producers.setdefault(producers, []).append(root)
  spaces, refused, outputs = [], [], []
  where: dict[int, tuple[int, int]] = {}  # channel (root) → (space index, channel index)
  for producers in sorted(by_producers, key=lambda key: _first(tracer, key[0])):
    roots = by_producers[producers]
    names = tuple("/".join(leaf_paths[leaf]) for leaf, _ in producers)
    reasons = [tracer.refusals[n] for root in roots for n in channel_nodes[root] if n in tracer.refusals]
    if reasons:
      if "output" in reasons:
        outputs.append(names)
      else:
        refused.append(Refusal(names, reasons[0]))
      continue
    first = {tracer.node_leaf[n][2]: root for root in roots for n in channel_nodes[root]
             if axis_of(n) == producers[0]}
    channel = {root: c for c, root in sorted(first.items())}
    for root, c in channel.items():
      where[root] = (len(spaces), c)
    axes: dict[tuple[int, int], np.ndarray] = {}
    node_of: dict[tuple[int, int], int] = {}  # a node of each axis in this space
    for root in roots:
      for n in channel_nodes[root]:
        leaf, axis, position = tracer.node_leaf[n]
        if (leaf, axis) not in axes:
          axes[(leaf, axis)] = np.full(_size(tracer, leaf, axis), -1)
          node_of[(leaf, axis)] = n
        axes[(leaf, axis)][position] = channel[root]
    kinds = {"coupled": [], "consumers": [], "statistics": []}
    for key in sorted(axes, key=lambda k: _first(tracer, k)):
      if key in producers:
        continue
      node = node_of[key]
      kinds["consumers" if role(node) == "consumer" else "coupled" if leaf_paths[key[0]][0] == "params"
            else "statistics"].append(key)
    make = lambda keys: tuple(Member(leaf_paths[leaf], tracer.values[tracer.invars[leaf]].shape, axis,
                                     axes[(leaf, axis)]) for leaf, axis in keys)
    # a coupled entry belongs to the producer whose channel it joins before any residual add
    local = lambda key: tracer.local.find(n) if (n := _at(tracer, key, channel_nodes[roots[0]])) >= 0 else -2
    local_producer = {local(key): i for i, key in enumerate(producers)}
    owner = tuple(local_producer.get(local(key), -1) for key in kinds["coupled"])
    spaces.append(ChannelSpace(len(channel), make(producers), make(kinds["coupled"]), make(kinds["consumers"]),
                               make(kinds["statistics"]), owner))

  carried = lambda ids: np.array([where.get(int(root_of[n]), (-1, -1)) if n >= 0 else (-1, -1)
                                  for n in ids.tolist()], dtype=np.int64).reshape(-1, 2)
  contractions = tuple(Contraction(kernel, flops, carried(inputs), carried(outs), writers)
                       for kernel, flops, inputs, outs, writers in tracer.contractions)
  channel_of = np.array([where.get(root, (-1, -1)) for root in root_of.tolist()], dtype=np.int64).reshape(-1, 2)
  return ChannelGraph(tuple(spaces), tuple(refused), tuple(outputs), contractions), channel_of


def _size(tracer: _Tracer, leaf: int, axis: int) -> int:
  return tracer.values[tracer.invars[leaf]].shape[axis]


def _at(tracer: _Tracer, key: tuple[int, int], nodes: Sequence[int]) -> int:
  """The node among `nodes` (one channel's) on the variable axis `key` = (leaf, axis); -1 if none."""
  return next((n for n in nodes if tracer.node_leaf[n][:2] == key), -1)


def _first(tracer: _Tracer, key: tuple[int, int]) -> int:
  """A sort key for the variable axis `key`: the first op that uses its leaf (execution order), then the axis."""
  return tracer.first_use.get(key[0], len(tracer.ops)) * 16 + key[1]
