"""From a random-access split to meta-batches of episodes (training) and to padded batches (evaluation), with grain.

The source is anything with `__len__` and `__getitem__(i) -> dict of numpy arrays`, e.g. what
`tfds.data_source(...)` or `builder.as_data_source(split)` returns for an array_record dataset; `__getitems__`
(batched reads) is used when the source has it. Raw examples follow the feature layout msp's builders share:
`image` uint8 (H, W, 3); `segmentation` uint8 (H, W); `depth` float32 (H, W) metres, 0 = invalid; `normals` float32
(H, W, 3) unit, zero vector = invalid; `edges` uint8 (H, W) {0, 1}; `attributes` uint8 (A,) {0, 1}, named by the
builder's ATTRIBUTE_NAMES.

Training meta-batch s is a pure function of (seed, s), drawn over the whole split whatever the number of processes:
each process loads its own consecutive slice of the meta-batch's episodes, and the slices in process order are the
meta-batch one process would load, so a run's result does not depend on how many hosts share it. A grain iterator's
state is just the next step index (`{"next_index": s}`, JSON-serialisable as grain returns it) and a resumed
iterator (`set_state`) yields bitwise the batches an uninterrupted one would. Evaluation is sharded by stride:
process p reads the source indices i with i % process_count == p, in ascending order.

An optional transform (resizing, augmentation: `data_pipelines.transforms`) maps each raw example, restricted to the
features the tasks read, before stacking. In training it gets a numpy Generator that is a pure function of (seed,
step, example slot), which keeps the guarantees above; in evaluation it gets no randomness.
"""
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.struct
import grain
import jax
import numpy as np

from msp.meta import MetaBatch, sample_task_masks

TARGET_KINDS = ("segmentation", "depth", "normals", "edges", "attributes")
# MapDataset.range needs a length; a meta-batch dataset without num_steps is this long, i.e. endless in practice.
_UNBOUNDED_STEPS = 2 ** 62

# (raw example, generator) -> raw example of the same layout.
Transform = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class TargetSpec:
  """How one task's target is made from a raw example.

  name: the task's name, the key of its target in a batch. kind: one of TARGET_KINDS. feature: the raw example's
  key it reads (default: the kind). void_value / ignore_index (segmentation): raw labels equal to void_value
  (None: no void label) become ignore_index, the loss's ignore label. attribute_indices (attributes): positions of
  the task's attributes in the example's attribute vector.
  """
  name: str
  kind: str
  feature: str
  void_value: int | None = 255
  ignore_index: int = -1
  attribute_indices: tuple[int, ...] = ()

  def __call__(self, example: Mapping[str, np.ndarray]) -> np.ndarray:
    """The target of an example, or of a batch of them (any leading axes, written ... below): segmentation int32
    (..., H, W); depth, edges float32 (..., H, W, 1) (metres, {0, 1}); normals float32 (..., H, W, 3); attributes
    float32 (..., A_t) {0, 1}. Float features that need no conversion are returned without a copy."""
    return _CONVERTERS[self.kind](self, np.asarray(example[self.feature]))


def _segmentation(spec: TargetSpec, raw: np.ndarray) -> np.ndarray:
  labels = raw.astype(np.int32)
  if spec.void_value is not None:
    labels[raw == spec.void_value] = spec.ignore_index
  return labels


def _with_channel(spec: TargetSpec, raw: np.ndarray) -> np.ndarray:
  return np.asarray(raw, np.float32)[..., None]


_CONVERTERS = {
    "segmentation": _segmentation,
    "depth": _with_channel,
    "normals": lambda spec, raw: np.asarray(raw, np.float32),
    "edges": _with_channel,
    "attributes": lambda spec, raw: raw[..., list(spec.attribute_indices)].astype(np.float32),
}


def target_spec(name: str, kind: str, options: Mapping[str, Any] | None = None,
                attribute_names: Sequence[str] = ()) -> TargetSpec:
  """The TargetSpec of task `name` of `kind` from its config options.

  Options read here: `feature` (any kind); `void_value` (default 255) and `ignore_index` (default -1) for
  segmentation; `attributes` for attributes: a name or tuple of names looked up in `attribute_names` (the dataset's
  ATTRIBUTE_NAMES), default the task's own name, checked against `num_attributes` when that is given. Other options
  (num_classes, ...) belong to the head and loss and are ignored.
  """
  options = dict(options or {})
  if kind not in TARGET_KINDS:
    raise ValueError(f"task {name!r}: kind {kind!r} has no dataset target; choose one of {TARGET_KINDS}")
  spec = TargetSpec(name=name, kind=kind, feature=options.get("feature", kind))
  if kind == "segmentation":
    return dataclasses.replace(spec, void_value=options.get("void_value", 255),
                               ignore_index=options.get("ignore_index", -1))
  if kind != "attributes":
    return spec
  wanted = options.get("attributes", name)
  wanted = (wanted,) if isinstance(wanted, str) else tuple(wanted)
  if not wanted:
    raise ValueError(f"task {name!r}: option `attributes` selects no attribute")
  missing = [a for a in wanted if a not in attribute_names]
  if missing:
    raise ValueError(f"task {name!r}: attributes {missing} are not in the dataset's ATTRIBUTE_NAMES "
                     f"{tuple(attribute_names)}")
  if options.get("num_attributes", len(wanted)) != len(wanted):
    raise ValueError(f"task {name!r}: num_attributes={options['num_attributes']} but {len(wanted)} attributes "
                     f"selected: {wanted}")
  return dataclasses.replace(spec, attribute_indices=tuple(list(attribute_names).index(a) for a in wanted))


def target_specs(task_configs: Mapping[str, Mapping[str, Any]], names: Sequence[str],
                 attribute_names: Sequence[str] = ()) -> tuple[TargetSpec, ...]:
  """TargetSpecs of tasks `names`, in that order (the task mask's column order), from
  `task_configs[name] = {kind: ..., <options>}` (config.tasks; kind defaults to the name)."""
  return tuple(target_spec(n, task_configs[n].get("kind", n), task_configs[n], attribute_names) for n in names)


def prepare_example(example: Mapping[str, np.ndarray], targets: Sequence[TargetSpec]) -> dict[str, np.ndarray]:
  """Raw example (or a batch of them, stacked feature by feature: any leading axes ...) → {"image": float32
  (..., H, W, 3) in [0, 1], <task name>: target (see TargetSpec.__call__)}."""
  image = np.asarray(example["image"])
  if image.dtype != np.uint8:
    raise ValueError(f"feature 'image' must be uint8 (..., H, W, 3), got {image.dtype} {image.shape}")
  return {"image": np.divide(image, np.float32(255), dtype=np.float32), **{t.name: t(example) for t in targets}}


@flax.struct.dataclass
class EvalBatch:
  """examples: {"image": (B, H, W, 3), <task>: (B, ...)}; valid: (B,) bool, False on padding rows; index: (B,)
  int64 source index of each row, -1 on padding rows."""
  examples: dict[str, np.ndarray]
  valid: np.ndarray
  index: np.ndarray


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f"process_index={index} must lie in [0, process_count={count})")
  return index, count


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def _in_background(dataset: grain.MapDataset, num_threads: int, prefetch_buffer_size: int) -> grain.IterDataset:
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))


class _Loader:
  """Reads source examples by index, transforms them (when given a transform), stacks them and prepares the stack;
  validates the source (and the transform, with a Generator seeded 0) once, on entry."""

  def __init__(self, source, targets: Sequence[TargetSpec], transform: Transform | None = None):
    self.source, self.targets, self.transform = source, tuple(targets), transform
    self.features = sorted({"image", *(t.feature for t in self.targets)})
    if len(source) == 0:
      raise ValueError("the data source is empty")
    example = source[0]
    missing = [f for f in self.features if f not in example]
    if missing:
      raise ValueError(f"the source's examples lack features {missing} (they have {sorted(example)}); a task "
                       f"reads the feature named by its `feature` option, by default its kind")
    for t in self.targets:
      if t.kind == "attributes" and max(t.attribute_indices) >= (width := len(example[t.feature])):
        raise ValueError(f"task {t.name!r}: attribute index {max(t.attribute_indices)} is out of range for the "
                         f"source's {t.feature!r} vector of length {width}; do ATTRIBUTE_NAMES match the dataset?")
    if transform is not None:
      example = transform({f: example[f] for f in self.features}, np.random.default_rng(0))
    prepare_example(example, self.targets)

  def load(self, indices: np.ndarray, rngs: Sequence[np.random.Generator] | None = None) -> dict[str, np.ndarray]:
    """indices: int (N,) → {"image": (N, H, W, 3), <task>: (N, ...)}; rngs: the transform's Generator for each
    example (None: the transform gets None)."""
    keys = [int(i) for i in indices]
    getitems = getattr(self.source, "__getitems__", None)
    raw = getitems(keys) if getitems is not None else [self.source[k] for k in keys]
    if self.transform is not None:
      rngs = [None] * len(raw) if rngs is None else rngs
      raw = [self.transform({f: r[f] for f in self.features}, rng) for r, rng in zip(raw, rngs, strict=True)]
    # Stacking the raw features first converts each feature in one pass, on the smaller raw dtypes.
    return prepare_example({f: np.stack([r[f] for r in raw]) for f in self.features}, self.targets)


class MetaBatchSampler:
  """Meta-batch s (s = 0, 1, ...) as a pure function of (seed, s); this process loads its slice of it.

  The meta-batch has `episodes` episodes. Each has a task mask from `sample_task_masks` and support_size +
  query_size distinct examples of the whole source (the first support_size are the support batch, the rest the
  disjoint query batch); episodes draw independently, so they may share examples. All of it comes from
  `np.random.default_rng((seed, s, 0))`. Process p of P loads episodes [p·E_local, (p+1)·E_local) with E_local =
  episodes / P, so concatenating the processes' meta-batches in process order gives the meta-batch of one process.
  `transform` (e.g. `functools.partial(transforms.augment, options=...)`) maps each drawn raw example; the one in
  slot j of the flattened (episodes, support_size + query_size) indices gets the Generator of
  `np.random.SeedSequence((seed, s, 0)).spawn(...)[j]`, independent of the draw's.
  """

  def __init__(self, source, targets: Sequence[TargetSpec], episodes: int, support_size: int, query_size: int,
               seed: int, task_sampling: str = "subsets", process_index: int | None = None,
               process_count: int | None = None, transform: Transform | None = None):
    self.process_index, process_count = _process(process_index, process_count)
    if episodes % process_count:
      raise ValueError(f"meta.episodes={episodes} is not divisible by the process count {process_count}")
    if len(source) < support_size + query_size:
      raise ValueError(f"the source holds {len(source)} examples, fewer than meta.support_size + meta.query_size = "
                       f"{support_size} + {query_size}: an episode's support and query batches must be disjoint")
    self._loader = _Loader(source, targets, transform)
    self.episodes, self.local_episodes = episodes, episodes // process_count
    self.support_size, self.query_size, self.seed, self.task_sampling = support_size, query_size, seed, task_sampling

  def draw(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices int64 (episodes, support_size + query_size) and task masks float32 (episodes, T) of the whole
    meta-batch of step."""
    rng = np.random.default_rng((self.seed, step, 0))
    size = self.support_size + self.query_size
    picks = np.stack([rng.choice(len(self._loader.source), size, replace=False) for _ in range(self.episodes)])
    masks = sample_task_masks(rng, self.episodes, len(self._loader.targets), self.task_sampling)
    return picks.astype(np.int64), masks

  def __call__(self, step: int) -> MetaBatch:
    """This process's slice of meta-batch `step`, numpy arrays: support/query {"image": (E_local, B, H, W, 3),
    <task>: (E_local, B, ...)}, task_mask (E_local, T) in the order of `targets`."""
    mine = slice(self.process_index * self.local_episodes, (self.process_index + 1) * self.local_episodes)
    indices, masks = (a[mine] for a in self.draw(step))
    rngs = None
    if self._loader.transform is not None:
      size = indices.shape[1]
      children = np.random.SeedSequence((self.seed, step, 0)).spawn(self.episodes * size)
      rngs = [np.random.default_rng(child) for child in children[mine.start * size:mine.stop * size]]
    flat = self._loader.load(indices.ravel(), rngs)
    both = {k: v.reshape(*indices.shape, *v.shape[1:]) for k, v in flat.items()}
    return MetaBatch(support={k: v[:, :self.support_size] for k, v in both.items()},
                     query={k: v[:, self.support_size:] for k, v in both.items()}, task_mask=masks)


def batch_sampler(source, targets: Sequence[TargetSpec], batch_size: int, seed: int):
  """Plain batches with every task's target: step s → {"image": (B, H, W, 3), <task>: (B, ...)}, B distinct
  examples of the whole `source` drawn as a pure function of (seed, s) (fine-tuning and support batches)."""
  sampler = MetaBatchSampler(source, targets, episodes=1, support_size=batch_size, query_size=0, seed=seed,
                             task_sampling="all", process_index=0, process_count=1)
  return lambda step: {k: v[0] for k, v in sampler(step).support.items()}


def meta_batch_dataset(sampler: MetaBatchSampler, num_steps: int | None = None, num_threads: int = 2,
                       prefetch_buffer_size: int = 4) -> grain.IterDataset:
  """Meta-batches 0, 1, ... (num_steps of them, or endless), made by `num_threads` background threads that keep up
  to `prefetch_buffer_size` meta-batches ready (num_threads=0: made on demand in the caller's thread).

  `iter(...)` gives a grain iterator whose `get_state()` is `{"next_index": s}` (plain ints, JSON-serialisable);
  `set_state` on a fresh iterator resumes at meta-batch s.
  """
  steps = grain.MapDataset.range(_UNBOUNDED_STEPS if num_steps is None else num_steps)
  return _in_background(steps.map(sampler), num_threads, prefetch_buffer_size)


def eval_num_batches(num_examples: int, batch_size: int, process_count: int | None = None) -> int:
  """Batches of `eval_dataset` per process for a split of `num_examples`: ceil(ceil(N / process_count) /
  batch_size), the same in every process."""
  _, process_count = _process(None, process_count)
  return _ceil_div(_ceil_div(num_examples, process_count), batch_size)


def eval_dataset(source, targets: Sequence[TargetSpec], batch_size: int, process_index: int | None = None,
                 process_count: int | None = None, num_threads: int = 2, prefetch_buffer_size: int = 4,
                 transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
                 ) -> grain.IterDataset:
  """This process's shard of the split, in ascending index order, as EvalBatch'es of exactly batch_size rows.

  The last batches are padded (valid False, index -1; the rows repeat source example 0), so shapes never change
  and sums weighted by `valid` count each example exactly once over all processes. Every process gets the same
  number of batches, ceil(ceil(len(source) / process_count) / batch_size), so collectives stay in step.
  `transform` (deterministic, e.g. `functools.partial(transforms.fit, size=...)`) maps each raw example.
  """
  process_index, process_count = _process(process_index, process_count)
  loader = _Loader(source, targets, None if transform is None else lambda example, _: transform(example))
  shard = np.arange(process_index, len(source), process_count)
  num_batches = eval_num_batches(len(source), batch_size, process_count)

  def batch(b: int) -> EvalBatch:
    index = np.full(batch_size, -1, np.int64)
    rows = shard[b * batch_size:(b + 1) * batch_size]
    index[:len(rows)] = rows
    return EvalBatch(examples=loader.load(np.maximum(index, 0)), valid=index >= 0, index=index)

  return _in_background(grain.MapDataset.range(num_batches).map(batch), num_threads, prefetch_buffer_size)
