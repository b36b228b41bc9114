"""What the experiment configs share: the schema's defaults (msp.train.config), the variants every dataset config
offers, and the tiny, paper-scale and real-data networks.

A dataset config parses its argument (`parse_arg`: `VARIANT[,MODIFIER...][,KEY=VALUE...]`), starts from
`experiment_defaults()`, adds its data, model and tasks and its modifiers' changes, then `apply_variant` last.
"""
import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import ml_collections

from msp.models.presets import BACKBONES
from msp.sparsity import PRUNE_SCOPES, thin_backbone
from msp.train.config import defaults


def method_defaults() -> ml_collections.ConfigDict:
  """The top level and the `sparsity`, `safeguards`, `budget`, `meta`, `optim` and `model` sections with the
  schema's defaults (`msp.train.config.SCHEMA`; docs/configuration.md): what every run needs."""
  return defaults("", "sparsity", "safeguards", "budget", "meta", "optim", "model")


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
  """Every section of the schema with its defaults (the method's, the run's, `init`, `finetune`, `prune`, `eval` and
  `adapt`), `variant` set to `arg`; a dataset config adds `data`, the network and the tasks."""
  c = defaults("", "sparsity", "safeguards", "budget", "meta", "optim", "model", "init", "finetune", "prune",
               "eval", "adapt")
  c.variant = arg
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
  """The `data` section of a dataset built from the user's download (`name` in data_pipelines.datasets.DATASETS):
  the schema's defaults, the builder config, the download's place (`manual_dir`) and `augment`."""
  d = defaults("data").data
  d.name = name
  d.config = builder_config
  d.manual_dir = ml_collections.FieldReference(None, field_type=str)
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
