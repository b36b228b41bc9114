"""Validation of a run's config, once, at start: every error names the offending key."""
import math

import jax
import ml_collections

from msp.meta import EPISODE_LOOPS, LAMBDA_MODES, META_GRADIENT_MODES
from msp.meta.episodes import TASK_SAMPLING
from msp.models.resnet import BLOCKS
from msp.train.adaptation import TRAINABLE
from msp.sparsity import BUDGET_TARGETS, COST_KINDS, GROUPINGS, PRUNE_SCOPES


class ConfigError(ValueError):
  """A config value is missing, of the wrong kind or out of range."""


def _choice(config, key: str, choices) -> None:
  value = _get(config, key)
  if value not in choices:
    raise ConfigError(f"config.{key}={value!r}; choose one of {sorted(choices)}")


def _get(config, key: str):
  node = config
  for part in key.split("."):
    if part not in node:
      raise ConfigError(f"config.{key} is missing")
    node = node[part]
  return node


def _positive(config, key: str, allow_zero: bool = False) -> None:
  value = _get(config, key)
  if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"config.{key}={value!r} must be {'≥' if allow_zero else '>'} 0")


def _integer(config, key: str, minimum: int) -> None:
  value = _get(config, key)
  if not isinstance(value, int) or value < minimum:
    raise ConfigError(f"config.{key}={value!r} must be an integer ≥ {minimum}")


def _fraction(config, key: str) -> None:
  value = _get(config, key)
  if not isinstance(value, (int, float)) or not 0 < value < 1:
    raise ConfigError(f"config.{key}={value!r} must lie strictly between 0 and 1")


def _finite_numbers(node, prefix: str = "") -> None:
  """ConfigError naming the first float anywhere in the config that is NaN or ±inf."""
  items = node.items() if hasattr(node, "items") else enumerate(node) if isinstance(node, (list, tuple)) else ()
  for key, value in items:
    name = f"{prefix}.{key}" if prefix else str(key)
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"config.{name}={value!r} must be a finite number")
    _finite_numbers(value, name)


def _model(config) -> None:
  """The model keys whose wrong values would otherwise fail deep inside Flax (a zero width divides by zero)."""
  _choice(config, "model.backbone.block", BLOCKS)
  widths = tuple(_get(config, "model.backbone.widths"))
  if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
    raise ConfigError(f"config.model.backbone.widths={widths!r} must be integers ≥ 1")
  if "head_width" in config.model:
    _integer(config, "model.head_width", 1)
  for kind, width in config.model.get("head_widths", {}).items():
    if not isinstance(width, int) or width < 1:
      raise ConfigError(f"config.model.head_widths.{kind}={width!r} must be an integer ≥ 1")


def _adapt(config) -> None:
  """The adaptation section (adapt_unseen.py), checked with the rest so that a bad value fails before training."""
  _integer(config, "adapt.steps", 0)
  _integer(config, "adapt.batch_size", 1)
  _positive(config, "adapt.lr")
  _choice(config, "adapt.train", TRAINABLE)
  for name in config.adapt.get("tasks") or ():
    if name not in config.tasks:
      raise ConfigError(f"config.adapt.tasks names {name!r}, which config.tasks does not define; choose from "
                        f"{sorted(config.get('unseen_tasks') or config.tasks)}")
  fraction = _get(config, "adapt.train_fraction")
  if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
    raise ConfigError(f"config.adapt.train_fraction={fraction!r} must lie in (0, 1]")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad key; returns None when the config is usable."""
  _finite_numbers(config)
  for key, minimum in (("steps", 1), ("checkpoint_every", 1), ("keep_checkpoints", 1), ("log_every", 0),
                       ("eval_every", 0), ("profile_steps", 0)):
    if key in config:
      _integer(config, key, minimum)
  for key in ("meta.inner_steps", "meta.episodes", "meta.support_size", "meta.query_size", "image_size"):
    _integer(config, key, 1)
  if config.get("num_devices") is not None:
    _integer(config, "num_devices", 1)
    if config.num_devices > jax.device_count():
      raise ConfigError(f"config.num_devices={config.num_devices}, but {jax.device_count()} device(s) are available")
  _model(config)
  if "eval" in config:
    for key in ("eval.batch_size", "eval.support_size"):
      _integer(config, key, 1)
    _integer(config, "eval.calibration_size", 0)
    if config.eval.get("max_examples") is not None:
      _integer(config, "eval.max_examples", 1)
  if "adapt" in config:
    _adapt(config)
  if "prune" in config:
    _choice(config, "prune.scope", PRUNE_SCOPES)
    _fraction(config, "prune.flops_kept")
  for key in ("meta.inner_lr", "optim.lr", "sparsity.lambda_init"):
    _positive(config, key)
  _positive(config, "optim.rho_lr", allow_zero=True)
  _choice(config, "meta.mode", META_GRADIENT_MODES)
  _choice(config, "meta.episode_loop", EPISODE_LOOPS)
  _choice(config, "meta.task_sampling", TASK_SAMPLING)
  _choice(config, "sparsity.lambda_mode", LAMBDA_MODES)
  _choice(config, "sparsity.grouping", GROUPINGS)
  _choice(config, "optim.name", ("adam", "sgd"))
  _choice(config, "budget.target_kind", BUDGET_TARGETS)
  _choice(config, "budget.cost", COST_KINDS)
  if config.sparsity.get("freeze_pattern") and config.meta.mode != "joint":
    raise ConfigError(f"config.sparsity.freeze_pattern=True needs meta.mode='joint', not {config.meta.mode!r}: an "
                      "inner loop would train the frozen channels")
  _fraction(config, "budget.target")
  _positive(config, "budget.dual_lr", allow_zero=True)
  for key in ("safeguards.lambda_min", "safeguards.lambda_max"):
    _positive(config, key)
  if config.safeguards.lambda_min >= config.safeguards.lambda_max:
    raise ConfigError("config.safeguards.lambda_min must be < config.safeguards.lambda_max")
  if not config.safeguards.lambda_min <= config.sparsity.lambda_init <= config.safeguards.lambda_max:
    raise ConfigError(f"config.sparsity.lambda_init={config.sparsity.lambda_init} lies outside the bounds "
                      f"[safeguards.lambda_min, safeguards.lambda_max]")
  for key in ("safeguards.min_channels", "safeguards.runaway_window", "safeguards.skip_window"):
    _integer(config, key, 1)
  _fraction(config, "safeguards.max_skipped_fraction")
  seen = tuple(_get(config, "seen_tasks"))
  if not seen:
    raise ConfigError("config.seen_tasks is empty")
  for name in seen:
    if name not in config.tasks:
      raise ConfigError(f"config.seen_tasks names {name!r}, which config.tasks does not define")
