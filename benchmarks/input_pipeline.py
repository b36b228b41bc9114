"""Does the augmenting input pipeline keep up with the meta-step? Examples per second of each, on this machine.

python benchmarks/input_pipeline.py [--experiment=experiments/configs/synthetic.py:budget,tiny] [--size=256]
    [--steps=20] [--dataset=synthetic_scenes --config=res256 [--manual_dir=DIR] [--data_dir=DIR] [--split=train]]

Pipeline: meta-batches of the experiment's episodes (meta.episodes x (support_size + query_size) examples, its seen
tasks' targets) made by episodes.MetaBatchSampler in `data.num_threads` grain threads: read, decode, transform,
stack, prepare. Timed over --steps meta-batches after the first, once without a transform and once augmenting to
--size² (transforms.augment with DEFAULT_AUGMENT). Consumption: the experiment's jitted meta-step (build_meta_learner,
image_size = --size) on one augmented meta-batch, median of --repeats steps after compilation. The ratio pipeline /
consumption > 1 means the pipeline makes examples faster than the step uses them. Both are measured alone, each
with the whole machine; in training they share it, so on a CPU-only machine a ratio near 1 is not enough.

Data: by default synthetic_scenes at res256 with 64 training examples, built into a temporary directory unless
--data_dir is given (about 15 s on 2 cores); --dataset/--config/--manual_dir/--data_dir name any dataset
`datasets.open_dataset` knows (pass an --experiment whose tasks that dataset has), prepared in --data_dir (default
$TFDS_DATA_DIR or ~/tensorflow_datasets) on first use.
"""
import functools
import tempfile
import time

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from msp import cli
from benchmarks.common import machine, median_seconds
from data_pipelines import episodes, transforms
from data_pipelines.datasets import open_dataset
from msp.parallel import shard_episodes
from msp.train import build_meta_learner

DEFAULT_AUGMENT = dict(scale=(1.0, 1.5), flip=0.5, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
SYNTHETIC_SIZES = dict(num_train=64, num_validation=0, num_test=0)

_EXPERIMENT = config_flags.DEFINE_config_file("experiment", "experiments/configs/synthetic.py:budget,tiny",
                                              "Experiment whose meta-step, episodes and tasks are measured.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the augmented images (and the meta-step's image_size), pixels.")
_STEPS = flags.DEFINE_integer("steps", 20, "Meta-batches timed per pipeline (after the first).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed meta-steps (median reported).")
_DATASET = flags.DEFINE_string("dataset", "synthetic_scenes", "Dataset name (config.data.name).")
_CONFIG = flags.DEFINE_string("config", "res256", "The dataset's builder config (config.data.config).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Where a real dataset's manual download lies.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir; default: for synthetic_scenes a temporary "
                                 "directory, else open_dataset's default.")
_SPLIT = flags.DEFINE_string("split", "train", "Split the pipeline reads.")


def examples_per_second(sampler: episodes.MetaBatchSampler, num_threads: int, prefetch: int) -> float:
  """Examples per second that `num_threads` grain threads deliver, over _STEPS meta-batches after the first."""
  iterator = iter(episodes.meta_batch_dataset(sampler, num_threads=num_threads, prefetch_buffer_size=prefetch))
  batch = next(iterator)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  return _STEPS.value * batch.support["image"].shape[0] * (
      batch.support["image"].shape[1] + batch.query["image"].shape[1]) / seconds


def measure(data_dir: str | None) -> None:
  c = _EXPERIMENT.value
  c.image_size = _SIZE.value
  m = c.meta
  data_config = ml_collections.ConfigDict(dict(name=_DATASET.value, config=_CONFIG.value, data_dir=data_dir,
                                               manual_dir=_MANUAL_DIR.value))
  if _DATASET.value == "synthetic_scenes":
    data_config.overrides = SYNTHETIC_SIZES
  dataset = open_dataset(data_config)
  source = dataset.source(_SPLIT.value)
  targets = dataset.targets(c.tasks, c.seen_tasks)
  options = transforms.AugmentOptions(size=_SIZE.value, **DEFAULT_AUGMENT)
  sampler = functools.partial(episodes.MetaBatchSampler, source, targets, m.episodes, m.support_size,
                              m.query_size, seed=0, task_sampling=m.task_sampling)
  augmenting = sampler(transform=functools.partial(transforms.augment, options=options))
  per_step = m.episodes * (m.support_size + m.query_size)
  raw_shape = "×".join(str(n) for n in source[0]["image"].shape[:2])

  print(f"Machine: {machine()}")
  print(f"Data: {_DATASET.value}/{_CONFIG.value} {_SPLIT.value} ({len(source)} examples, raw "
        f"{raw_shape}), tasks {tuple(c.seen_tasks)}; augment to {_SIZE.value}² with "
        f"{DEFAULT_AUGMENT}")
  print(f"Meta-step: {c.model.backbone.block} backbone widths {tuple(c.model.backbone.widths)}, {c.meta.mode}, "
        f"K={m.inner_steps}, E={m.episodes} episodes × (support {m.support_size} + query {m.query_size}) = "
        f"{per_step} examples / step; pipeline: {c.data.num_threads} grain threads, prefetch {c.data.prefetch}, "
        f"{_STEPS.value} meta-batches timed\n")

  plain = examples_per_second(sampler(), c.data.num_threads, c.data.prefetch)
  augmented = examples_per_second(augmenting, c.data.num_threads, c.data.prefetch)

  learner = build_meta_learner(c)
  batch = shard_episodes(augmenting(0), learner.mesh)
  holder = [learner.init_state(jax.random.key(0))]
  compiled = learner.train_step.lower(holder[0], batch).compile()

  def call():
    holder[0], metrics = compiled(holder[0], batch)
    return metrics

  step_seconds = median_seconds(call, _REPEATS.value)
  consumed = per_step / step_seconds

  print("| stage | examples / s |")
  print("| --- | --- |")
  print(f"| pipeline, raw {raw_shape} examples, no transform | {plain:.1f} |")
  print(f"| pipeline, augmenting to {_SIZE.value}² | {augmented:.1f} |")
  print(f"| meta-step ({step_seconds * 1e3:.0f} ms / step) | {consumed:.1f} |")
  print(f"\nratio pipeline / consumption (augmenting): {augmented / consumed:.2f} "
        f"({'keeps up' if augmented > consumed else 'does NOT keep up'})")


def main(argv):
  del argv
  if _DATA_DIR.value is not None or _DATASET.value != "synthetic_scenes":
    measure(_DATA_DIR.value)
    return
  with tempfile.TemporaryDirectory() as data_dir:
    measure(data_dir)


if __name__ == "__main__":
  cli.run(main)
