"""The run config's schema: every key's default, allowed values, meaning and resume policy, written once.

`SCHEMA` maps a section ("" for the top level) to its keys. From it: `defaults()` builds the sections a config file
starts from, `validate_config` checks every key of a config once, at start (one ConfigError naming the first bad
key), `may_differ_on_resume` says which keys a resumed run may change, and `schema_markdown` is
docs/configuration.md. Task options are declared with their task kinds (`msp.tasks.registry.task_options`).

Sections in OPTIONAL_SECTIONS may be absent; a present one must hold all its required keys. A key the schema does
not know is an error.
"""
import math
from typing import Any

import jax
import ml_collections

from msp.meta import EPISODE_LOOPS, LAMBDA_MODES, META_GRADIENT_MODES
from msp.meta.episodes import TASK_SAMPLING
from msp.models.heads import HEADS
from msp.models.layers import ACTIVATIONS
from msp.models.resnet import BLOCKS, STEMS
from msp.schema import (REQUIRED, Bool, Check, Choice, Int, Ints, Key, Names, Pairs, Real, Reals, Table, Text,
                        describe_default)
from msp.sparsity import BUDGET_TARGETS, COST_KINDS, DEFAULT_INCLUDE, GROUPINGS, PRUNE_SCOPES
from msp.tasks.registry import TASK_KINDS, task_options
from msp.train.adaptation import TRAINABLE


class ConfigError(ValueError):
  """A config value is missing, of the wrong kind or out of range."""


POSITIVE = Real(0, low_open=True)
NON_NEGATIVE = Real(0)
FRACTION = Real(0, 1, low_open=True, high_open=True)
UNIT = Real(0, 1)

SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "variant": Key("", Check(), "the config file's argument that made this config (a label)"),
        "seed": Key(0, Int(0), "seeds the initial state and every meta-batch"),
        "image_size": Key(REQUIRED, Int(1), "H = W of the network's input images, pixels"),
        "steps": Key(600, Int(1), "outer (meta) steps of the run; raise it to extend a finished run", resume=True),
        "log_every": Key(20, Int(0), "log metrics every this many steps (0: only the last)", resume=True),
        "checkpoint_every": Key(200, Int(1), "checkpoint every this many steps (and at the last)", resume=True),
        "keep_checkpoints": Key(3, Int(1), "newest checkpoints kept (the best one is kept besides)", resume=True),
        "eval_every": Key(0, Int(0), "score the seen tasks on eval.select_split every this many steps and keep the "
                          "best checkpoint in checkpoints_best/ (0: never)", resume=True),
        "profile_steps": Key(0, Int(0), "trace this many steps (from a process's second) into WORKDIR/profile",
                             resume=True),
        "num_devices": Key(None, Int(1, optional=True), "devices the meta-batch's episodes are sharded over (None: "
                           "all, and always all in a multi-process job)", resume=True),
        "seen_tasks": Key(REQUIRED, Names(), "the tasks meta-training sees, in the task mask's order"),
        "unseen_tasks": Key((), Names(empty=True), "tasks held out for adaptation (adapt_unseen.py)"),
    },
    "sparsity": {
        "enabled": Key(True, Bool(), "group lasso on the backbone (False: no λ, no prox)"),
        "include": Key(DEFAULT_INCLUDE, Text(), "regex on '/'-joined parameter paths: the conv kernels sparsified"),
        "grouping": Key("out_channel", Choice(GROUPINGS), "a group is an output channel (with its BatchNorm scale and "
                        "bias) or an input channel of a kernel"),
        "lambda_mode": Key("per_layer", Choice(LAMBDA_MODES), "one λ per sparsified layer, or one for the backbone"),
        "lambda_init": Key(1e-2, POSITIVE, "initial λ"),
        "learn_lambda": Key(True, Bool(), "meta-learn λ (False: λ stays at lambda_init)"),
        "freeze_pattern": Key(False, Bool(), "keep zero channels zero and train the rest (fine-tuning; needs "
                              "meta.mode='joint')"),
    },
    "safeguards": {
        "lambda_min": Key(1e-8, POSITIVE, "lower bound of every λ (ρ is clipped after each update)"),
        "lambda_max": Key(10.0, POSITIVE, "upper bound of every λ"),
        "min_channels": Key(1, Int(1), "channels per layer that no prox may remove"),
        "outlier_factor": Key(10.0, NON_NEGATIVE, "skip an outer step whose meta-gradient norm exceeds this × its "
                              "running average (0: skip non-finite ones only)"),
        "outlier_warmup": Key(10, Int(0), "accepted steps before outliers are judged"),
        "runaway_factor": Key(100.0, Real(1, low_open=True), "warn when a λ moves by more than this factor within "
                              "runaway_window steps"),
        "runaway_window": Key(100, Int(1), "steps of the λ runaway warning's window"),
        "max_skipped_fraction": Key(0.5, FRACTION, "stop the run when more than this fraction of its last "
                                    "skip_window steps were skipped", resume=True),
        "skip_window": Key(50, Int(1), "steps of the skipped-fraction window", resume=True),
    },
    "budget": {
        "enabled": Key(False, Bool(), "budget mode: the meta-gradient meets a target on the network's size"),
        "target_kind": Key("channels_removed", Choice(BUDGET_TARGETS), "`channels_removed` (fraction of the "
                           "sparsified channels) or `flops_kept` (fraction of the backbone's FLOPs; ties residual "
                           "streams, relative prox thresholds and λ priced by channel cost)"),
        "target": Key(0.5, FRACTION, "the target, a fraction"),
        "cost": Key("flops", Choice(COST_KINDS), "what a channel costs in the cost term: its FLOPs, weights, or 1 "
                    "(`uniform`, the teacher–student studies')"),
        "dual_lr": Key(0.005, NON_NEGATIVE, "step of the cost term's multiplier μ per unit of gap"),
        "cap": Key(True, Bool(), "the outer prox never goes past the target"),
    },
    "meta": {
        "mode": Key("first_order", Choice(tuple(META_GRADIENT_MODES)), "the meta-gradient: `second_order` (exact), "
                    "`first_order`, `reference` (the authors' prototype objective), `joint` (no meta-learning)"),
        "inner_steps": Key(1, Int(1), "inner-loop steps K"),
        "inner_lr": Key(0.05, POSITIVE, "inner-loop learning rate α"),
        "remat": Key(False, Bool(), "rematerialise each inner step (less memory, more compute)", resume=True),
        "inner_batch_stats": Key(False, Bool(), "update BatchNorm statistics in the inner loop"),
        "episodes": Key(4, Int(1), "episodes per meta-batch"),
        "support_size": Key(8, Int(1), "support examples per episode"),
        "query_size": Key(8, Int(1), "query examples per episode"),
        "task_sampling": Key("subsets", Choice(TASK_SAMPLING), "each episode's tasks: a random subset, or all"),
        "episode_loop": Key("unroll", Choice(tuple(EPISODE_LOOPS)), "how a device loops over its episodes: "
                            "`unroll` (fastest on CPU) or `map` (one episode in memory at a time)", resume=True),
    },
    "optim": {
        "name": Key("sgd", Choice(("adam", "sgd")), "outer optimiser of the weights (sgd: momentum 0.9)"),
        "lr": Key(0.02, POSITIVE, "outer learning rate of the weights"),
        "rho_lr": Key(0.01, NON_NEGATIVE, "Adam learning rate of ρ = log λ"),
    },
    "model": {
        "head_width": Key(REQUIRED, Int(1), "channels of every head's hidden layer"),
        "head_kinds": Key({}, Table(Choice(("dense", "attribute")), Choice(tuple(HEADS))), "head kind serving each "
                          "task role (default: the role itself)"),
        "head_widths": Key({}, Table(Text(), Int(1)), "width of each head kind (default: head_width)"),
        "dtype": Key("float32", Choice(("float32", "bfloat16")), "dtype of activations"),
        "init_from": Key(None, Text(optional=True), "a torchvision ResNet state dict (.npz, .pth) for the initial "
                         "backbone", resume=True),
        "width_factor": Key(None, Real(0, low_open=True), "thin_dense's width scale (that variant records it)",
                            required=False),
        "flops_fraction": Key(1.0, Real(0, 1, low_open=True), "the backbone's FLOPs / those of the config's full "
                              "backbone (thin_dense records it)", required=False),
    },
    "model.backbone": {
        "block": Key(REQUIRED, Choice(tuple(BLOCKS)), "residual block"),
        "stem": Key(REQUIRED, Choice(STEMS), "stem"),
        "stem_width": Key(REQUIRED, Int(1), "stem channels"),
        "depths": Key(REQUIRED, Ints(1), "blocks per stage"),
        "widths": Key(REQUIRED, Ints(1), "channels per stage"),
        "strides": Key(REQUIRED, Ints(1), "stride of each stage's first block"),
        "dilations": Key(REQUIRED, Ints(1), "dilation per stage"),
        "activation": Key("relu", Choice(tuple(ACTIVATIONS)), "activation", required=False),
        "dilate_first_block": Key(True, Bool(), "a stage's first block takes the stage's dilation (False: the "
                                  "previous stage's, as torchvision's ResNet)", required=False),
        "conv_widths": Key((), Pairs(), "per-conv output widths of a pruned network", required=False),
    },
    "init": {
        "from_run": Key(None, Text(optional=True), "start from this run's trained network (its workdir)",
                        resume=True),
        "step": Key(None, Int(0, optional=True), "that run's checkpoint (None: its best, else its latest)",
                    resume=True),
    },
    "finetune": {
        "steps": Key(300, Int(1), "fine-tuning steps of the comparison protocol", resume=True),
        "lr": Key(0.02, POSITIVE, "fine-tuning learning rate", resume=True),
        "eval_every": Key(50, Int(1), "fine-tuning scores and checkpoints every this many steps", resume=True),
    },
    "prune": {
        "scope": Key("uniform", Choice(PRUNE_SCOPES), "magnitude pruning: the same fraction per layer, or one global "
                     "threshold on layer-normalised norms", resume=True),
        "flops_kept": Key(0.5, FRACTION, "magnitude pruning's FLOPs target", resume=True),
        "pattern_from": Key(None, Text(optional=True), "zero the channels that run zeroed instead of the smallest",
                            resume=True),
    },
    "eval": {
        "batch_size": Key(64, Int(1), "evaluation batch size", resume=True),
        "max_examples": Key(None, Int(1, optional=True), "score at most this many examples (None: the split)",
                            resume=True),
        "support_size": Key(64, Int(1), "training examples of the seen tasks' inner loop at evaluation", resume=True),
        "calibration_size": Key(256, Int(0), "training examples that recompute BatchNorm statistics (0: keep "
                                "training's)", resume=True),
        "select_split": Key("validation", Text(), "the split eval_every scores and checkpoints are chosen on",
                            resume=True),
        "select_metric": Key(None, Text(optional=True), "`task/metric` that picks the best checkpoint (None: the "
                             "first seen task's first)", resume=True),
    },
    "adapt": {
        "tasks": Key(None, Names(optional=True), "unseen tasks to adapt to (None: unseen_tasks)", resume=True),
        "train": Key("heads", Choice(TRAINABLE), "train new heads only, or heads and the surviving backbone",
                     resume=True),
        "steps": Key(300, Int(0), "adaptation steps", resume=True),
        "batch_size": Key(16, Int(1), "adaptation batch size", resume=True),
        "lr": Key(1e-3, POSITIVE, "adaptation learning rate", resume=True),
        "train_fraction": Key(1.0, Real(0, 1, low_open=True), "fraction of the training split adaptation sees",
                              resume=True),
    },
    "data": {
        "name": Key(REQUIRED, Text(), "the dataset (data_pipelines.datasets.DATASETS)"),
        "config": Key(REQUIRED, Text(), "the dataset's builder config"),
        "overrides": Key({}, Table(Text(), Check()), "builder config fields replacing the named config's"),
        "manual_dir": Key(None, Text(optional=True), "the user's download (needed to build)", resume=True,
                          required=False),
        "data_dir": Key(None, Text(optional=True), "tfds data directory (None: $TFDS_DATA_DIR or "
                        "~/tensorflow_datasets)", resume=True),
        "train_split": Key("train", Text(), "the split meta-training draws from"),
        "eval_split": Key("test", Text(), "the split evaluate.py reports", resume=True),
        "num_threads": Key(4, Int(1), "input pipeline threads", resume=True),
        "prefetch": Key(4, Int(0), "meta-batches prefetched", resume=True),
    },
    "data.augment": {
        "enabled": Key(False, Bool(), "augment training examples"),
        "scale": Key((1.0, 1.0), Reals(Real(1), ordered=True), "(min, max) zoom", required=False),
        "flip": Key(0.0, UNIT, "probability of a horizontal flip", required=False),
        "brightness": Key(0.0, UNIT, "colour jitter strength", required=False),
        "contrast": Key(0.0, UNIT, "colour jitter strength", required=False),
        "saturation": Key(0.0, UNIT, "colour jitter strength", required=False),
        "hue": Key(0.0, Real(0, 0.5), "colour jitter strength, a fraction of a turn", required=False),
    },
    "teacher": {
        "alive_per_layer": Key(REQUIRED, Ints(1), "the teacher's alive channels per sparsified layer"),
        "seed": Key(1, Int(0), "seeds the teacher"),
        "pool_size": Key(None, Int(1, optional=True), "images in the student's pool (None: fresh every step)"),
    },
}
# The run layer's sections (data, evaluation, adaptation, fine-tuning, pruning, the initial network) and a
# teacher–student study's teacher: configs that only meta-train, such as the teacher–student ones, leave them out.
OPTIONAL_SECTIONS = ("data", "data.augment", "teacher", "init", "finetune", "prune", "eval", "adapt")
TASKS = "tasks"  # the section of tasks: tasks.<name>.<option>, options by kind (msp.tasks.registry.task_options)


def key_of(path: str, config: ml_collections.ConfigDict | dict | None = None) -> Key | None:
  """The schema's Key of the dotted `path` ("meta.inner_lr", "tasks.edges.max_dist"); None when the schema has no
  such key. A task option needs `config` (its kind) unless the option means the same for every kind."""
  section, _, name = path.rpartition(".")
  if section in SCHEMA:
    return SCHEMA[section].get(name)
  parts = path.split(".")
  if len(parts) == 3 and parts[0] == TASKS:
    task = (config or {}).get(TASKS, {}).get(parts[1], {}) if config is not None else {}
    kinds = [task.get("kind", parts[1])] if task else list(TASK_KINDS)
    keys = [task_options(kind).get(parts[2]) for kind in kinds if kind in TASK_KINDS]
    return next((key for key in keys if key is not None), None)
  return None


def may_differ_on_resume(path: str) -> bool:
  """Whether a resumed run (or a script reading a finished one) may change the key at dotted `path`."""
  key = key_of(path)
  return key is not None and key.resume


def defaults(*sections: str) -> ml_collections.ConfigDict:
  """A ConfigDict of the schema's defaults for `sections` ("" for the top level; none: every section but the
  optional ones), without the REQUIRED keys a config sets itself. A None default is a typed placeholder, so that
  `--config.KEY=VALUE` can set it."""
  config = ml_collections.ConfigDict()
  for section in sections or [s for s in SCHEMA if s not in OPTIONAL_SECTIONS]:
    node = config
    for part in section.split(".") if section else ():
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    for name, key in SCHEMA[section].items():
      if key.default is REQUIRED or not key.required:
        continue
      node[name] = _placeholder(key) if key.default is None else _copy(key.default)
  return config


def _copy(value):
  return dict(value) if isinstance(value, dict) else tuple(value) if isinstance(value, list) else value


_PLACEHOLDER_TYPES = {Int: int, Real: float, Text: str, Names: tuple}


def _placeholder(key: Key) -> ml_collections.FieldReference:
  return ml_collections.FieldReference(None, field_type=_PLACEHOLDER_TYPES.get(type(key.check), object))


def complete(values: dict) -> dict:
  """`values` (a run's config.json, nested dicts) with every key it lacks that the schema has a default for, in
  every section it has (added in place): a key added to msp after the run was made defaults to what msp did before
  it existed."""
  for section, keys in SCHEMA.items():
    node = _section(values, section)
    if not isinstance(node, dict):
      continue
    for name, key in keys.items():
      if name not in node and key.required and key.default is not REQUIRED:
        node[name] = _copy(key.default)
  return values


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad key (unknown, missing, of the wrong kind, out of range, or at odds with
  another key); returns None when the config is usable."""
  values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  _check_keys(values)
  _check_relations(values)


def _check_keys(values: dict) -> None:
  for section, keys in SCHEMA.items():
    node = _section(values, section)
    if node is None:
      if section and section not in OPTIONAL_SECTIONS and (section.rpartition(".")[0] in ("", *SCHEMA)):
        raise ConfigError(f"config.{section} is missing")
      continue
    if not isinstance(node, dict):
      raise ConfigError(f"config.{section}={node!r} must be a section")
    prefix = f"{section}." if section else ""
    for name, key in keys.items():
      if name not in node:
        if key.required:
          raise ConfigError(f"config.{prefix}{name} is missing")
        continue
      _check_value(f"{prefix}{name}", node[name], key.check)
    for name, value in node.items():
      path = f"{prefix}{name}"
      if name not in keys and not (path in SCHEMA or path == TASKS):
        raise ConfigError(f"config.{path} is not a key of msp's config (docs/configuration.md lists them)")
  tasks = values.get(TASKS)
  if not isinstance(tasks, dict) or not tasks:
    raise ConfigError("config.tasks must define at least one task")
  for task, options in tasks.items():
    if not isinstance(options, dict):
      raise ConfigError(f"config.tasks.{task}={options!r} must be a section of options")
    kind = options.get("kind", task)
    if kind not in TASK_KINDS:
      raise ConfigError(f"config.tasks.{task}.kind={kind!r}; choose one of {sorted(TASK_KINDS)}")
    schema = task_options(kind)
    for name, key in schema.items():
      if name in options:
        _check_value(f"tasks.{task}.{name}", options[name], key.check)
      elif key.required:
        raise ConfigError(f"config.tasks.{task}.{name} is missing (a {kind} task needs it)")
    for name in options:
      if name not in schema:
        raise ConfigError(f"config.tasks.{task}.{name} is not an option of a {kind} task; choose from "
                          f"{sorted(schema)}")


def _section(values: dict, section: str):
  node = values
  for part in section.split(".") if section else ():
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def _check_value(path: str, value: Any, check: Check) -> None:
  if isinstance(value, float) and not math.isfinite(value):
    raise ConfigError(f"config.{path}={value!r} must be a finite number")
  problem = check.problem(value)
  if problem is not None:
    raise ConfigError(f"config.{path}={value!r}{problem}")


def _check_relations(c: dict) -> None:
  """The checks that involve two keys or the machine."""
  if c["num_devices"] is not None and c["num_devices"] > jax.device_count():
    raise ConfigError(f"config.num_devices={c['num_devices']}, but {jax.device_count()} device(s) are available")
  if c["num_devices"] not in (None, jax.device_count()) and jax.process_count() > 1:
    raise ConfigError(f"config.num_devices={c['num_devices']}: a job of {jax.process_count()} processes shards the "
                      f"meta-batch over all {jax.device_count()} devices; leave num_devices unset")
  s = c["safeguards"]
  if s["lambda_min"] >= s["lambda_max"]:
    raise ConfigError("config.safeguards.lambda_min must be < config.safeguards.lambda_max")
  if not s["lambda_min"] <= c["sparsity"]["lambda_init"] <= s["lambda_max"]:
    raise ConfigError(f"config.sparsity.lambda_init={c['sparsity']['lambda_init']} lies outside the bounds "
                      f"[safeguards.lambda_min, safeguards.lambda_max]")
  if c["sparsity"]["freeze_pattern"] and c["meta"]["mode"] != "joint":
    raise ConfigError(f"config.sparsity.freeze_pattern=True needs meta.mode='joint', not {c['meta']['mode']!r}: an "
                      "inner loop would train the frozen channels")
  for key in ("seen_tasks", "unseen_tasks"):
    for name in c[key]:
      if name not in c[TASKS]:
        raise ConfigError(f"config.{key} names {name!r}, which config.tasks does not define")
  if "adapt" in c:
    for name in c["adapt"]["tasks"] or ():
      if name not in c[TASKS]:
        raise ConfigError(f"config.adapt.tasks names {name!r}, which config.tasks does not define; choose from "
                          f"{sorted(c['unseen_tasks'] or c[TASKS])}")
  b = c["model"]["backbone"]
  stages = {key: len(b[key]) for key in ("depths", "widths", "strides", "dilations")}
  if len(set(stages.values())) != 1:
    raise ConfigError(f"config.model.backbone: depths, widths, strides and dilations must have one entry per "
                      f"stage, not {stages}")


def leaf_paths(config: ml_collections.ConfigDict | dict) -> list[str]:
  """The dotted path of every key of `config` the schema checks as one value (a mapping-valued key such as
  model.head_widths is one value), in schema order."""
  values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  paths = []
  for section, keys in SCHEMA.items():
    node = _section(values, section)
    if isinstance(node, dict):
      paths += [f"{section}.{name}" if section else name for name in keys if name in node]
  for task, options in values.get(TASKS, {}).items():
    paths += [f"{TASKS}.{task}.{name}" for name in options]
  return paths


def schema_markdown() -> str:
  """docs/configuration.md: every section's keys with default, allowed values, resume policy and meaning."""
  lines = ["# Configuration", "",
           "Every key of a run's config, generated from `msp.train.config.SCHEMA` (do not edit by hand: "
           "`make docs` writes this page, and a test checks that it is current). *resume*: a resumed run, or a "
           "script reading a finished one, may change the key with `--config.KEY=VALUE`; every other key defines "
           "the state or its meaning and must match the run's `config.json`. A key whose default reads *(set by "
           "the config)* has none: the dataset config sets it. Sections marked *optional* may be absent.", ""]
  for section, keys in SCHEMA.items():
    title = f"`{section}`" if section else "top level"
    lines += [f"## {title}{' (optional)' if section in OPTIONAL_SECTIONS else ''}", "",
              "| key | default | allowed | resume | meaning |", "|---|---|---|---|---|"]
    for name, key in keys.items():
      lines.append(_row(name, key))
    lines.append("")
  lines += ["## `tasks`", "", "`tasks.<name>` holds one task's options; `kind` (default: the task's name) picks the "
            "others.", ""]
  for kind in TASK_KINDS:
    lines += [f"### kind `{kind}`", "", "| option | default | allowed | resume | meaning |", "|---|---|---|---|---|"]
    lines += [_row(name, key) for name, key in task_options(kind).items() if name != "kind"]
    lines.append("")
  return "\n".join(lines)


def _row(name: str, key: Key) -> str:
  default = describe_default(key.default) if key.required or key.default is not REQUIRED else "–"
  cells = [f"`{name}`", default.replace("|", "\\|"), key.check.allowed.replace("|", "\\|"),
           "yes" if key.resume else "", key.help.replace("|", "\\|")]
  return "| " + " | ".join(cells) + " |"


