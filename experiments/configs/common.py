"""Config sections the experiments share: the method's defaults (sparsity, safeguards, budget, meta, optimiser),
the run, evaluation and adaptation sections, and the variants every dataset config offers.

A dataset config parses its argument (`parse_arg`: `VARIANT[,MODIFIER...][,KEY=VALUE...]`), starts from
`experiment_defaults()`, adds its data, model and tasks and its modifiers' changes, then `apply_variant` last.
"""
import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import ml_collections

from msp.models.presets import BACKBONES
from msp.sparsity import DEFAULT_INCLUDE, PRUNE_SCOPES, thin_backbone


def method_defaults() -> ml_collections.ConfigDict:
  """The `sparsity`, `safeguards`, `budget`, `meta` and `optim` sections with msp's defaults (docs/method.md
  §2–§11)."""
  c = ml_collections.ConfigDict()
  c.sparsity = ml_collections.ConfigDict(dict(
      enabled=True, include=DEFAULT_INCLUDE, grouping="out_channel", lambda_mode="per_layer", lambda_init=1e-2,
      learn_lambda=True, freeze_pattern=False))
  c.safeguards = ml_collections.ConfigDict(dict(
      lambda_min=1e-8, lambda_max=10.0, min_channels=1, outlier_factor=10.0, outlier_warmup=10,
      runaway_factor=100.0, runaway_window=100, max_skipped_fraction=0.5,
      skip_window=50))
  c.budget = ml_collections.ConfigDict(dict(
      enabled=False, target_kind="channels_removed", target=0.5, cost="flops", dual_lr=0.005, cap=True))
  c.meta = ml_collections.ConfigDict(dict(
      mode="first_order", inner_steps=1, inner_lr=0.05, remat=False, inner_batch_stats=False, episodes=4,
      support_size=8, query_size=8, task_sampling="subsets", episode_loop="unroll"))
  # SGD makes the outer prox a true proximal-gradient step: a group stays at zero iff its gradient norm is below
  # λ·w. With Adam, whose steps are ~lr per coordinate whatever the gradient, channels kept dying at fixed λ and
  # budget mode overshot its target (see README, "Budget mode").
  c.optim = ml_collections.ConfigDict(dict(name="sgd", lr=0.02, rho_lr=0.01))
  return c


# The method and the paper's baselines (docs/method.md §12), through the same scripts:
#   meta_sparsity         learned per-layer λ, first-order meta-gradient (exact at K = 1), inner prox
#   meta_sparsity_global  the same with one λ for the whole backbone
#   reference             the authors' prototype objective (no inner prox, λΩ(θ_K) in the outer loss)
#   budget                meta_sparsity with a budget: 50 % of the backbone's channels removed (flops=F: F of the
#                         backbone's FLOPs kept, with residual streams tied and λ priced by channel cost)
#   maml                  meta-learning without sparsity (λ = 0)
#   dense_mtl             dense multi-task training, no meta-learning
#   fixed_lambda          multi-task training with fixed-λ group lasso and the proximal step (Less is More);
#                         lambda=V sets λ (default 0.05)
PAPER_VARIANTS = ("meta_sparsity", "meta_sparsity_global", "reference", "budget", "maml", "dense_mtl", "fixed_lambda")
# The comparison study's further baselines, each a dense_mtl run in some respect:
#   single_task           dense_mtl on one seen task (task=T, default the first): the reference of Δm
#   thin_dense            dense_mtl with every backbone width scaled by one factor to flops=F (default 0.5) of the
#                         backbone's FLOPs (msp.sparsity.thin_backbone; the widths are resolved here, in the config)
#   magnitude             dense_mtl's config plus the `prune` section (flops=F, scope=uniform|global): a trained
#                         dense_mtl network pruned by channel norm to F of its FLOPs, then fine-tuned
STUDY_BASELINES = ("single_task", "thin_dense", "magnitude")
VARIANTS = PAPER_VARIANTS + STUDY_BASELINES
# Variants trained without meta-learning: every seen task in every batch (`meta.mode=joint`).
JOINT_VARIANTS = ("dense_mtl", "fixed_lambda", *STUDY_BASELINES)
JOINT_LAMBDA = 0.05  # their λ (fixed_lambda's default; the dense ones log it, unused)


@dataclasses.dataclass(frozen=True)
class Setting:
  """A `key=value` modifier a variant takes: what the value means, which values it accepts (`allowed`, in words;
  `read` turns the text into one, ValueError when it is not), and the value when the key is not given (`default`,
  described by `default_text` where the value itself would not say it)."""
  meaning: str
  allowed: str
  read: Callable[[str], Any]
  default: Any
  default_text: str | None = None

  def describe(self, key: str) -> str:
    """`key= (meaning, allowed; default ...)`: how an error message lists it."""
    return f"{key}= ({self.meaning}, {self.allowed}; default {self.default_text or self.default})"


def _number(text: str) -> float:
  """A finite float from `text` (ValueError otherwise)."""
  value = float(text)
  if not math.isfinite(value):
    raise ValueError(text)
  return value


def _fraction(text: str) -> float:
  """A number strictly between 0 and 1."""
  value = _number(text)
  if not 0 < value < 1:
    raise ValueError(text)
  return value


def _positive(text: str) -> float:
  """A number > 0."""
  value = _number(text)
  if value <= 0:
    raise ValueError(text)
  return value


def _one_of(choices: Sequence[str]) -> Callable[[str], str]:
  """A reader that accepts exactly the strings in `choices`."""
  def read(text: str) -> str:
    if text not in choices:
      raise ValueError(text)
    return text
  return read


def variant_settings(variant: str, seen_tasks: Sequence[str]) -> dict[str, Setting]:
  """The `key=value` modifiers `variant` takes ({} for most), for a dataset config whose seen tasks are `seen_tasks`."""
  flops = lambda default, default_text=None: Setting("the backbone's FLOPs kept", "a fraction in (0, 1)", _fraction,
                                                     default, default_text)
  return {
      "budget": {"flops": flops(None, "none: 50 % of the channels removed")},
      "fixed_lambda": {"lambda": Setting("the group-lasso strength λ", "a number > 0", _positive, JOINT_LAMBDA)},
      "single_task": {"task": Setting("the one task trained", f"one of the seen tasks {tuple(seen_tasks)}",
                                      _one_of(seen_tasks), seen_tasks[0])},
      "thin_dense": {"flops": flops(0.5)},
      "magnitude": {"flops": flops(0.5),
                    "scope": Setting("where channels are cut", f"one of {PRUNE_SCOPES}", _one_of(PRUNE_SCOPES),
                                     "uniform")},
  }.get(variant, {})


class ConfigArg(NamedTuple):
  """A dataset config's argument, parsed: the variant, its plain modifiers (`tiny`, `paper`, a layout, ...) in the
  order given, the value of every key=value modifier the variant takes (given or default), and `FILE:ARG` as given
  (for error messages)."""
  variant: str
  modifiers: tuple[str, ...]
  settings: dict[str, Any]
  source: str


def parse_arg(arg: str, config_file: str, seen_tasks: Sequence[str], modifiers: Sequence[str] = ("tiny",),
              ) -> ConfigArg:
  """`VARIANT[,MODIFIER...][,KEY=VALUE...]` (modifiers and keys in any order) → ConfigArg.

  seen_tasks: the dataset config's seen tasks (what `single_task`'s `task=` may name); modifiers: the plain
  modifiers the config accepts. A ValueError (one line) names the file, the variant and what it accepts: an unknown
  variant or modifier, a key the variant does not take, a key given twice, a value it does not accept."""
  variant, *parts = arg.split(",")
  plain = tuple(p for p in parts if "=" not in p)
  if variant not in VARIANTS or any(m not in modifiers for m in plain):
    keyed = "; ".join(f"{v}: {', '.join(f'{k}=' for k in variant_settings(v, seen_tasks))}" for v in VARIANTS
                      if variant_settings(v, seen_tasks))
    raise ValueError(f"unknown variant {arg!r} of {config_file}; choose one of {VARIANTS}, optionally followed by "
                     f"any of {tuple(',' + m for m in modifiers)} and the variant's key=value modifiers ({keyed})")
  accepted = variant_settings(variant, seen_tasks)
  takes = ", ".join(setting.describe(key) for key, setting in accepted.items()) or "no keys"
  problem = lambda text: ValueError(f"{config_file}:{arg}: {text}; variant {variant!r} takes {takes}")
  given = {}
  for key, text in (p.split("=", 1) for p in parts if "=" in p):
    if key not in accepted:
      raise problem(f"unknown key {key!r}")
    if key in given:
      raise problem(f"{key}= is given twice")
    try:
      given[key] = accepted[key].read(text)
    except ValueError:
      raise problem(f"{key}={text!r} is not {accepted[key].allowed}") from None
  return ConfigArg(variant, plain, {key: given.get(key, s.default) for key, s in accepted.items()},
                   f"{config_file}:{arg}")


def chosen(arg: str, modifiers: Sequence[str], choices: Sequence[str], default: str, what: str) -> str:
  """The one modifier of `arg` (already split into `modifiers`) that is among `choices`, else `default`; naming
  two is a ValueError."""
  picked = [m for m in modifiers if m in choices]
  if len(picked) > 1:
    raise ValueError(f"{arg} names several {what} {picked}; choose one")
  return picked[0] if picked else default


def experiment_defaults(arg: str) -> ml_collections.ConfigDict:
  """`method_defaults()` plus the run (seed, steps, logging, checkpoints, devices), `model.init_from`, and the
  `init`, `finetune`, `prune`, `eval` and `adapt` sections."""
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

  # Magnitude pruning of a trained network (the `magnitude` variant, experiments/prune.py) before fine-tuning: keep
  # `flops_kept` of the backbone's FLOPs, cutting the channels of smallest norm; scope "uniform": the same fraction
  # of channels kept in every layer, "global": one threshold on layer-normalised channel norms. Only shapes a run's
  # initial state; in every config (unused by the other variants), so that config.json always has it.
  # `pattern_from` (a run directory) replaces the norms: the channels that run's network zeroed (its best, else
  # latest checkpoint) are zeroed, whatever their norm here — a learned structure on another run's weights.
  c.prune = ml_collections.ConfigDict(dict(scope="uniform", flops_kept=0.5,
                                           pattern_from=ml_collections.FieldReference(None, field_type=str)))

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


def apply_variant(c: ml_collections.ConfigDict, arg: ConfigArg) -> None:
  """Sets the sections that make `arg.variant` (one of VARIANTS, with its key=value settings) differ from
  meta_sparsity. Applied last, to the dataset's final network: `thin_dense` scales the widths of `c.model.backbone`
  and records `model.width_factor` and `model.flops_fraction` (the thin backbone's FLOPs / the full one's)."""
  variant, settings = arg.variant, arg.settings
  if variant == "meta_sparsity_global":
    c.sparsity.lambda_mode = "global"
  elif variant == "reference":
    c.meta.mode = "reference"
  elif variant == "budget":
    c.budget.enabled = True
    if settings["flops"] is not None:  # FLOPs mode: streams tied, relative thresholds, λ priced by cost
      c.budget.update(target_kind="flops_kept", target=settings["flops"])
  elif variant == "maml":
    c.sparsity.enabled = False
  elif variant in JOINT_VARIANTS:
    c.meta.mode = "joint"
    c.meta.task_sampling = "all"
    c.sparsity.enabled = variant == "fixed_lambda"
    c.sparsity.learn_lambda = False
    c.sparsity.lambda_init = settings.get("lambda", JOINT_LAMBDA)
    if variant == "single_task":
      c.seen_tasks = (settings["task"],)
    elif variant == "thin_dense":
      try:
        thin = thin_backbone(c.model.backbone, settings["flops"], c.image_size)
      except ValueError as e:
        raise ValueError(f"{arg.source}: {e}") from None
      c.model.backbone = thin.fields
      c.model.width_factor = thin.width_factor
      c.model.flops_fraction = thin.flops_fraction
    elif variant == "magnitude":
      c.prune.update(flops_kept=settings["flops"], scope=settings["scope"])


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


def finish(c: ml_collections.ConfigDict, arg: ConfigArg, tiny_examples: int) -> None:
  """Applies a `paper`/`paper_torchvision` modifier, `tiny` (with `tiny_examples` support and query images per
  episode: fixture downloads are small) and then the variant to a real-data config."""
  for modifier in arg.modifiers:
    if modifier in PAPER_MODIFIERS:
      paper_model(c, PAPER_MODIFIERS[modifier])
  if "tiny" in arg.modifiers:
    c.image_size = 16
    c.data.num_threads = 2
    tiny_model(c)
    c.meta.support_size = c.meta.query_size = tiny_examples
    c.adapt.batch_size = 2
  apply_variant(c, arg)
