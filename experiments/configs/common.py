"""Config sections the experiments share: the method's defaults (sparsity, safeguards, budget, meta, optimiser),
the run, evaluation and adaptation sections, and the variants every dataset config offers.

A dataset config starts from `experiment_defaults()`, adds its data, model and tasks, then `apply_variant`.
"""
from typing import Sequence

import ml_collections

from msp.models.presets import BACKBONES
from msp.sparsity import DEFAULT_INCLUDE


def method_defaults() -> ml_collections.ConfigDict:
  """The `sparsity`, `safeguards`, `budget`, `meta` and `optim` sections with msp's defaults (docs/method.md
  §2–§11)."""
  c = ml_collections.ConfigDict()
  c.sparsity = ml_collections.ConfigDict(dict(
      enabled=True, include=DEFAULT_INCLUDE, grouping="out_channel", weighting="sqrt_group_size",
      lambda_mode="per_layer", lambda_init=1e-2, learn_lambda=True, freeze_pattern=False))
  c.safeguards = ml_collections.ConfigDict(dict(
      lambda_min=1e-8, lambda_max=10.0, min_channels=1, outlier_factor=10.0, outlier_warmup=10,
      runaway_factor=100.0, runaway_window=100, max_skipped_steps=20))
  c.budget = ml_collections.ConfigDict(dict(
      enabled=False, target_kind="channels_removed", target=0.5, cost="flops", dual_lr=0.005, constraint="at_most",
      scale_lr=0.02, horizon=150.0, cap=True))
  c.meta = ml_collections.ConfigDict(dict(
      mode="first_order", inner_steps=1, inner_lr=0.05, remat=False, inner_batch_stats=False, episodes=4,
      support_size=8, query_size=8, task_sampling="subsets", episode_loop="unroll"))
  # SGD makes the outer prox a true proximal-gradient step: a group stays at zero iff its gradient norm is below
  # λ·w. With Adam, whose steps are ~lr per coordinate whatever the gradient, channels kept dying at fixed λ and
  # budget mode overshot its target (see README, "Budget mode").
  c.optim = ml_collections.ConfigDict(dict(name="sgd", lr=0.02, weight_decay=0.0, rho_lr=0.01))
  return c


# The method and its baselines (docs/method.md §12), through the same scripts:
#   meta_sparsity         learned per-layer λ, first-order meta-gradient (exact at K = 1), inner prox
#   meta_sparsity_global  the same with one λ for the whole backbone
#   reference             the authors' prototype objective (no inner prox, λΩ(θ_K) in the outer loss)
#   budget                meta_sparsity with a budget: 50 % of the backbone's channels removed
#   maml                  meta-learning without sparsity (λ = 0)
#   dense_mtl             dense multi-task training, no meta-learning
#   fixed_lambda          multi-task training with fixed-λ group lasso and the proximal step (Less is More)
VARIANTS = ("meta_sparsity", "meta_sparsity_global", "reference", "budget", "maml", "dense_mtl", "fixed_lambda")


def parse_arg(arg: str, config_file: str, modifiers: Sequence[str] = ("tiny",)) -> tuple[str, tuple[str, ...]]:
  """`VARIANT[,MODIFIER...]` → (variant, modifiers); a ValueError names the file and the choices."""
  variant, *given = arg.split(",")
  if variant not in VARIANTS or any(m not in modifiers for m in given):
    raise ValueError(f"unknown variant {arg!r} of {config_file}; choose one of {VARIANTS}, optionally followed by "
                     f"any of {tuple(',' + m for m in modifiers)}")
  return variant, tuple(given)


def chosen(arg: str, modifiers: Sequence[str], choices: Sequence[str], default: str, what: str) -> str:
  """The one modifier of `arg` (already split into `modifiers`) that is among `choices`, else `default`; naming
  two is a ValueError."""
  picked = [m for m in modifiers if m in choices]
  if len(picked) > 1:
    raise ValueError(f"{arg} names several {what} {picked}; choose one")
  return picked[0] if picked else default


def experiment_defaults(arg: str) -> ml_collections.ConfigDict:
  """`method_defaults()` plus the run (seed, steps, logging, checkpoints, devices), `model.init_from`, and the `eval`
  and `adapt` sections."""
  c = method_defaults()
  c.variant = arg
  c.seed = 0
  c.steps = 600
  c.log_every = 20
  c.checkpoint_every = 200
  c.keep_checkpoints = 3  # the newest checkpoints kept (the best one by eval.select_metric is kept besides)
  # Every this many steps (0: never) the protocol scores the seen tasks on data.select_split: logged to
  # metrics.jsonl and TensorBoard, and the best checkpoint by eval.select_metric is kept in checkpoints_best/.
  c.eval_every = 0
  c.profile_steps = 0  # trace this many steps (from the second step of a process) into WORKDIR/profile
  c.num_devices = ml_collections.FieldReference(None, field_type=int)

  # The dataset config adds the network (backbone, heads, dtype) to this section. `init_from`: a torchvision
  # ResNet state dict (.npz, or .pth with torch) whose weights and BatchNorm statistics replace the backbone's
  # initial ones (msp.models.torchvision_import), e.g. ImageNet weights with the `paper_torchvision` modifier;
  # None: random initialisation. Only the initial state: a resumed run restores its checkpoint.
  c.model = ml_collections.ConfigDict()
  c.model.init_from = ml_collections.FieldReference(None, field_type=str)

  # A run may start from another run's trained network instead of a fresh one (fine-tuning, magnitude pruning):
  # `from_run` its workdir, `step` its checkpoint (None: the best by eval.select_metric when it kept one, else the
  # latest). Only params and BatchNorm statistics are taken; optimiser, λ and budget start fresh.
  c.init = ml_collections.ConfigDict()
  c.init.from_run = ml_collections.FieldReference(None, field_type=str)
  c.init.step = ml_collections.FieldReference(None, field_type=int)

  # The protocol every method's structure goes through before it is compared (experiments/finetune.py): its zero
  # pattern held fixed (sparsity.freeze_pattern), dense multi-task training of the surviving channels on the seen
  # tasks for `steps` at `lr` (the run's optimiser, constant schedule), scored on eval.select_split every
  # `eval_every` steps; the best checkpoint is the result. The same for every method, so no method gets more
  # training than another.
  c.finetune = ml_collections.ConfigDict(dict(steps=300, lr=0.02, eval_every=50))

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.max_examples = ml_collections.FieldReference(None, field_type=int)  # None: the whole split
  # The evaluation protocol (msp/train/evaluation.py). The seen tasks' inner loop runs on this many training
  # examples: with 4 (the meta-training support size) the synthetic scores moved by up to 8 % between support draws,
  # with 64 by under 1 %.
  c.eval.support_size = 64
  # BatchNorm statistics of the evaluated weights from this many training examples (0: keep training's averages).
  c.eval.calibration_size = 256
  c.eval.select_split = "validation"  # what eval_every scores during training
  # "task/metric" (e.g. "segmentation/miou") that picks the best checkpoint; None: the first seen task's first one
  c.eval.select_metric = ml_collections.FieldReference(None, field_type=str)

  c.adapt = ml_collections.ConfigDict()
  c.adapt.tasks = ml_collections.FieldReference(None, field_type=tuple)  # None: all of unseen_tasks
  c.adapt.train = "heads"  # or "heads_and_backbone" (surviving channels only)
  c.adapt.steps = 300
  c.adapt.batch_size = 16
  c.adapt.lr = 1e-3
  c.adapt.train_fraction = 1.0
  return c


def apply_variant(c: ml_collections.ConfigDict, variant: str) -> None:
  """Sets the sections that make `variant` (one of VARIANTS) differ from meta_sparsity."""
  if variant == "meta_sparsity_global":
    c.sparsity.lambda_mode = "global"
  elif variant == "reference":
    c.meta.mode = "reference"
  elif variant == "budget":
    c.budget.enabled = True
  elif variant == "maml":
    c.sparsity.enabled = False
  elif variant in ("dense_mtl", "fixed_lambda"):
    c.meta.mode = "joint"
    c.meta.task_sampling = "all"
    c.sparsity.enabled = variant == "fixed_lambda"
    c.sparsity.learn_lambda = False
    c.sparsity.lambda_init = 0.05


def tiny_model(c: ml_collections.ConfigDict) -> None:
  """A few steps of a 2-stage, 4/8-channel net on 2 episodes of 2 + 2 examples: the `tiny` modifier (tests)."""
  c.steps = 4
  c.log_every = 1
  c.checkpoint_every = 2
  c.model.backbone.update(block="basic", stem="simple", stem_width=4, depths=(1, 1), widths=(4, 8), strides=(2, 2),
                          dilations=(1, 1))
  c.model.head_width = 8
  c.meta.episodes = 2
  c.meta.support_size = c.meta.query_size = 2
  c.eval.batch_size = 8
  c.eval.max_examples = 16
  c.eval.support_size = 4
  c.eval.calibration_size = 16
  c.adapt.steps = 2
  c.adapt.batch_size = 4
  c.finetune.update(steps=2, eval_every=1)


# Model modifiers every dataset config accepts: the paper's network with either backbone (docs/method.md §13).
PAPER_MODIFIERS = {"paper": "resnet50_deep_dilated", "paper_torchvision": "resnet50_torchvision_dilated"}


def paper_model(c: ml_collections.ConfigDict, backbone: str = "resnet50_deep_dilated") -> None:
  """The paper-scale network on 256² inputs: a dilated ResNet-50 (`msp.models.presets.BACKBONES[backbone]`), a
  DeepLab-v3 ASPP head (256 channels) per dense task and the authors' conv + pooled-MLP head (64 → 32) per attribute
  task. The paper does not state its batch sizes; support and query stay at 8 images per episode.

  Episodes run one after another in a loop (`meta.episode_loop=map`): at this size unrolling them gains no
  parallelism a device lacks, and the compiled step held 3.4–3.6× the memory and compiled slower (4 episodes, CPU:
  first_order 5.6 vs 19.1 GiB, second_order 13.4 vs 48.7 GiB; see docs/paper_scale.md)."""
  c.image_size = 256
  c.meta.episode_loop = "map"
  c.model.backbone = dict(BACKBONES[backbone])
  c.model.head_kinds = {"dense": "aspp", "attribute": "conv_pool_mlp"}
  c.model.head_widths = {"aspp": 256, "conv_pool_mlp": 64}
  c.meta.support_size = c.meta.query_size = 8
  c.eval.batch_size = 16
  c.eval.support_size = 16  # one inner step on this many 256² images is the evaluation's peak memory


def downloaded_data(name: str, builder_config: str, augment: dict) -> ml_collections.ConfigDict:
  """The `data` section of a dataset built from the user's download (`name` in data_pipelines.datasets.DATASETS)."""
  d = ml_collections.ConfigDict()
  d.name = name
  d.config = builder_config
  d.overrides = {}  # builder config fields replacing the named config's (resolution, split, seed, ...)
  d.manual_dir = ml_collections.FieldReference(None, field_type=str)  # the download (needed to build)
  d.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  d.train_split = "train"
  d.eval_split = "test"  # select checkpoints on "validation", report on "test"
  d.num_threads = 4
  d.prefetch = 4
  d.augment = augment
  return d


def real_data_model(c: ml_collections.ConfigDict) -> None:
  """The default net for real data at 256²: a dilated ResNet-18-like backbone (output stride 8), 128-wide heads, and
  the run length and episode sizes that go with it."""
  c.image_size = 256
  c.steps = 20000
  c.log_every = 50
  c.checkpoint_every = 1000
  c.model.backbone = dict(block="basic", stem="deep", stem_width=64, depths=(2, 2, 2, 2), widths=(64, 128, 256, 512),
                          strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), activation="relu")
  c.model.head_width = 128
  c.model.dtype = "float32"
  c.meta.support_size = 8
  c.meta.query_size = 8
  c.eval.support_size = 32  # one inner step on this many 256² images is the evaluation's peak memory


def finish(c: ml_collections.ConfigDict, variant: str, modifiers: Sequence[str], tiny_examples: int) -> None:
  """Applies the variant, a `paper`/`paper_torchvision` modifier and `tiny` (with `tiny_examples` support and query
  images per episode: fixture downloads are small) to a real-data config."""
  apply_variant(c, variant)
  for modifier in modifiers:
    if modifier in PAPER_MODIFIERS:
      paper_model(c, PAPER_MODIFIERS[modifier])
  if "tiny" in modifiers:
    c.image_size = 16
    c.data.num_threads = 2
    tiny_model(c)
    c.meta.support_size = c.meta.query_size = tiny_examples
    c.adapt.batch_size = 2
