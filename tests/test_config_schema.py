"""The config schema (msp/train/config.py): every key of every shipped config is checked, each bad value ends in one
line naming the key, unknown and missing keys are refused, the resume policy is the schema's, and
docs/configuration.md is the schema's own text."""
import copy
import os

import ml_collections
import pytest

from experiments.configs import celebamask_hq, nyuv2, own_data, synthetic, teacher_student
from msp.schema import REQUIRED, Int, Real
from msp.train.config import (OPTIONAL_SECTIONS, SCHEMA, ConfigError, complete, defaults, key_of, leaf_paths,
                              may_differ_on_resume, schema_markdown, validate_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"synthetic budget,flops=0.25": lambda: synthetic.get_config("budget,flops=0.25"),
           "nyuv2 budget": lambda: nyuv2.get_config("budget"),
           "celebamask_hq dense_mtl": lambda: celebamask_hq.get_config("dense_mtl"),
           "teacher_student budget": lambda: teacher_student.get_config("budget"),
           "own_data meta_sparsity": lambda: _own_data("meta_sparsity")}


def _own_data(arg: str) -> ml_collections.ConfigDict:
  """The template for a prepared dataset, its `data.config` set as a user sets it."""
  config = own_data.get_config(arg)
  config.data.config = "/data/shapes/1.0.0"
  return config


def _set(values: dict, path: str, value) -> dict:
  """A deep copy of the nested dict `values` with the dotted `path` set to `value`."""
  values = copy.deepcopy(values)
  *parents, leaf = path.split(".")
  node = values
  for part in parents:
    node = node[part]
  node[leaf] = value
  return values


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_is_valid_and_every_one_of_its_keys_is_checked(name):
  config = CONFIGS[name]()
  validate_config(config)
  values = config.to_dict()
  paths = leaf_paths(values)
  assert len(paths) > 40
  for path in paths:
    key = key_of(path, values)
    assert key is not None, path
    bad = _set(values, path, key.check.refused)
    with pytest.raises(ConfigError) as error:
      validate_config(ml_collections.ConfigDict(bad))
    message = str(error.value)
    assert message.startswith(f"config.{path}") and "\n" not in message, (path, message)


def test_a_key_the_schema_does_not_know_and_a_missing_one_are_refused():
  values = synthetic.get_config("budget").to_dict()
  with pytest.raises(ConfigError, match=r"^config.meta.inner_stepz is not a key of msp's config"):
    validate_config(ml_collections.ConfigDict(_set(values, "meta.inner_stepz", 2)))
  with pytest.raises(ConfigError, match=r"^config.tasks.edges.tolerance is not an option of a edges task"):
    validate_config(ml_collections.ConfigDict(_set(values, "tasks.edges.tolerance", 1)))
  missing = copy.deepcopy(values)
  del missing["meta"]["inner_lr"]
  with pytest.raises(ConfigError, match=r"^config.meta.inner_lr is missing$"):
    validate_config(ml_collections.ConfigDict(missing))
  no_classes = copy.deepcopy(values)
  del no_classes["tasks"]["segmentation"]["num_classes"]
  with pytest.raises(ConfigError, match=r"^config.tasks.segmentation.num_classes is missing"):
    validate_config(ml_collections.ConfigDict(no_classes))
  without_eval = copy.deepcopy(values)
  del without_eval["eval"]  # an optional section may be absent ...
  validate_config(ml_collections.ConfigDict(without_eval))
  del without_eval["optim"]  # ... the others may not
  with pytest.raises(ConfigError, match=r"^config.optim is missing$"):
    validate_config(ml_collections.ConfigDict(without_eval))


@pytest.mark.parametrize("path,value,message", [
    ("steps", 0, "config.steps=0 must be an integer ≥ 1"),
    ("optim.lr", -0.1, "config.optim.lr=-0.1 must be > 0"),
    ("budget.target", 1.5, "config.budget.target=1.5 must lie strictly between 0 and 1"),
    ("adapt.train_fraction", 1.5, "config.adapt.train_fraction=1.5 must lie in (0, 1]"),
    ("meta.mode", "bogus", "config.meta.mode='bogus'; choose one of ['first_order', 'joint', 'reference', "
                           "'second_order']"),
    ("optim.lr", float("nan"), "config.optim.lr=nan must be a finite number"),
    ("model.backbone.widths", (), "config.model.backbone.widths=() must be a non-empty sequence of integers ≥ 1"),
    ("sparsity.learn_lambda", 1, "config.sparsity.learn_lambda=1 must be True or False"),
])
def test_messages_say_what_is_allowed(path, value, message):
  values = synthetic.get_config("budget").to_dict()
  with pytest.raises(ConfigError) as error:
    validate_config(ml_collections.ConfigDict(_set(values, path, value)))
  assert str(error.value) == message


def test_relations_between_keys():
  values = synthetic.get_config("budget").to_dict()
  for path, value, message in (
      ("safeguards.lambda_min", 20.0, "config.safeguards.lambda_min must be < config.safeguards.lambda_max"),
      ("sparsity.lambda_init", 50.0, "config.sparsity.lambda_init=50.0 lies outside the bounds"),
      ("sparsity.freeze_pattern", True, "config.sparsity.freeze_pattern=True needs meta.mode='joint'"),
      ("seen_tasks", ("segmentation", "bogus"), "config.seen_tasks names 'bogus', which config.tasks does not"),
      ("adapt.tasks", ("bogus",), "config.adapt.tasks names 'bogus'"),
      ("model.backbone.depths", (1, 1), "config.model.backbone: depths, widths, strides and dilations must have one "
                                        "entry per stage")):
    with pytest.raises(ConfigError) as error:
      validate_config(ml_collections.ConfigDict(_set(values, path, value)))
    assert str(error.value).startswith(message), (path, str(error.value))


def test_defaults_hold_every_key_that_has_one_and_none_that_has_not():
  every = defaults(*SCHEMA).to_dict()
  for section, keys in SCHEMA.items():
    node = every
    for part in section.split(".") if section else ():
      node = node[part]
    for name, key in keys.items():
      assert (name in node) == (key.default is not REQUIRED and key.required), (section, name)
  assert set(defaults().to_dict()) >= {"sparsity", "meta", "model"}
  assert not set(defaults().to_dict()) & set(OPTIONAL_SECTIONS)
  # a None default takes a value of its type from the command line: it is a typed placeholder
  assert defaults("eval").eval.get_type("max_examples") is int


def test_the_resume_policy_is_the_schemas():
  assert may_differ_on_resume("steps") and may_differ_on_resume("eval.batch_size")
  assert may_differ_on_resume("tasks.edges.max_dist") and may_differ_on_resume("data.data_dir")
  assert not may_differ_on_resume("model.head_width") and not may_differ_on_resume("tasks.edges.loss")
  assert not may_differ_on_resume("model.head_widths.aspp") and not may_differ_on_resume("bogus.key")
  assert isinstance(key_of("meta.inner_steps").check, Int) and isinstance(key_of("optim.lr").check, Real)


def test_docs_configuration_is_the_schemas_text():
  """Regenerate with `make docs` when the schema changes."""
  with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
    assert f.read() == schema_markdown() + "\n"


def test_a_run_config_written_before_a_key_existed_gets_its_default():
  values = synthetic.get_config("budget").to_dict()
  old = copy.deepcopy(values)
  del old["prune"]["pattern_from"], old["safeguards"]["skip_window"]
  assert complete(old) == values
  assert "teacher" not in complete({"model": {}})  # only the sections a config has
