"""The scripts' command lines: every bad input ends with one `error: ...` line on stderr and exit status 2, writes
nothing; overrides of a finished run's config; --help; export's --overwrite; the default compile cache.

Each script start costs seconds, so the unmarked tests run one script per kind of mistake (a flag, a config file, a
config value, a run-reading script, export's --out) and check the other messages in-process, where the script gets
them (validate_config, open_run, check_split, ...); the same cases through the scripts are marked slow.
"""
import hashlib
import os

import ml_collections
import pytest

from experiments.run import script
from experiments.configs import synthetic
from experiments.run.scoring import check_split
from experiments.run.training import open_run
from msp.train import ConfigError
from msp.train.config import may_differ_on_resume
from msp.train.config import validate_config
from tests.run_fixtures import tiny_config
from tests.test_experiments import _script

C = "--config=experiments/configs/synthetic.py:budget,tiny"
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
  """A finished tiny run (4 steps) through the script."""
  workdir = str(tmp_path_factory.mktemp("run") / "budget")
  out = _script("meta_train", C, f"--workdir={workdir}", f"--config.data.data_dir={data_dir}")
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def config_only_run(data_dir, tmp_path_factory):
  """A workdir holding only the tiny config.json a run starts with: enough for the errors found before a checkpoint
  is read, without training one."""
  workdir = tmp_path_factory.mktemp("config_only") / "budget"
  workdir.mkdir()
  (workdir / "config.json").write_text(_tiny(data_dir).to_json_best_effort(sort_keys=True))
  check_split(_tiny(data_dir), "test")  # renders the dataset here: tfds's progress bars are no script's output
  return str(workdir)


def _tiny(data_dir, **overrides) -> ml_collections.ConfigDict:
  """The config `C` gives, with `overrides` (dotted keys) set as --config.KEY=VALUE would set them."""
  return tiny_config(data_dir, **overrides)


def _tree(*directories):
  """{path: (kind, sha256 of the content, mtime)} of every directory and file below `directories`."""
  tree = {}
  for directory in directories:
    for d, dirs, files in os.walk(directory):
      tree[d] = ("dir", None, os.path.getmtime(d))
      for f in files:
        path = os.path.join(d, f)
        with open(path, "rb") as file:
          tree[path] = ("file", hashlib.sha256(file.read()).hexdigest(), os.path.getmtime(path))
  return tree


def _refused(name, args, *directories):
  """Runs script `name`; asserts one error line, exit status 2 and `directories` unchanged; returns the line."""
  before = _tree(*directories)
  out = _script(name, *args)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
  assert _tree(*directories) == before
  return lines[0]


@pytest.mark.parametrize("args,message", [
    pytest.param([C, "--config.meta.inner_stepz=2"],
                 "--config.meta.inner_stepz: the config has no key 'inner_stepz'; did you mean 'inner_steps'?",
                 marks=slow),
    (["--config=experiments/configs/nope.py"], "--config=experiments/configs/nope.py: no such file"),
    pytest.param(["--config=experiments/configs/synthetic.py:bogus"], "unknown variant 'bogus' of synthetic.py",
                 marks=slow),
    pytest.param([C, "--config.model.head_width=0"], "config.model.head_width=0 must be an integer ≥ 1", marks=slow),
    pytest.param([C, "--config.model.backbone.block=bogus"], "config.model.backbone.block='bogus'; choose one of",
                 marks=slow),
    pytest.param([C, "--config.num_devices=3"], "config.num_devices=3, but 1 device(s) are available", marks=slow),
    pytest.param([C, "--config.data.name=bogus"], "config.data.name='bogus'; choose one of", marks=slow),
    pytest.param([C, "--config.adapt.steps=-1"], "config.adapt.steps=-1 must be an integer ≥ 0", marks=slow),
    pytest.param([C, "--config.adapt.lr=-1"], "config.adapt.lr=-1.0 must be > 0", marks=slow),
    pytest.param([C, "--config.adapt.lr=0"], "config.adapt.lr=0.0 must be > 0", marks=slow),
    pytest.param([C, "--config.checkpoint_every=0"], "config.checkpoint_every=0 must be an integer ≥ 1", marks=slow),
    pytest.param([C, "--config.log_every=-1"], "config.log_every=-1 must be an integer ≥ 0", marks=slow),
    ([C, "--config.steps=0"], "config.steps=0 must be an integer ≥ 1"),
    pytest.param([C, "--config.steps=-3"], "config.steps=-3 must be an integer ≥ 1", marks=slow),
    ([C, "--bogus"], "Unknown command line flag 'bogus'"),
    pytest.param([C, "--config.sparsity.include=^nothing"], "sparsity.include='^nothing' matches no 4-D conv kernel",
                 marks=slow),
    ([C, "--config.sparsity.include=kernel$"], "/conv/kernel and head_"),  # two head kernels, one name
])
def test_meta_train_bad_input_is_one_line(tmp_path, args, message):
  line = _refused("meta_train", [*args, f"--workdir={tmp_path / 'w'}", f"--config.data.data_dir={tmp_path / 'd'}"],
                  tmp_path)
  assert message in line
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name,args,message", [
    ("evaluate", ["--split=bogus"], "--split='bogus' is not a split of synthetic_scenes; choose one of ['test', "
     "'train', 'validation']"),
    ("evaluate", ["--config.model.head_width=4"], "--config.model.head_width: the run's checkpoints depend on it"),
    ("adapt_unseen", ["--config.adapt.lr=0"], "config.adapt.lr=0.0 must be > 0"),
    ("adapt_unseen", ["--config.adapt.trainz=heads"], "did you mean 'train'?"),
    ("export", ["--config.steps=0", "--out=OUT"], "config.steps=0 must be an integer ≥ 1"),
])
@slow
def test_bad_input_to_a_finished_run_is_one_line(run, tmp_path, name, args, message):
  args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
  assert message in _refused(name, [f"--workdir={run}", *args], run, tmp_path)


@slow
def test_export_refuses_a_file_or_a_non_empty_out_and_overwrites_only_an_earlier_export(run, tmp_path):
  """Also: without JAX_COMPILATION_CACHE_DIR the scripts cache compiled programs in ~/.cache/msp/jax."""
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  assert "exists and is not a directory" in _refused("export", [f"--workdir={run}", f"--out={blocker}"], run,
                                                     tmp_path)
  out = tmp_path / "export"
  out.mkdir()
  (out / "notes.txt").write_text("not an export")
  assert "give --overwrite" in _refused("export", [f"--workdir={run}", f"--out={out}"], run, tmp_path)
  assert "is not an earlier export (it holds notes.txt)" in _refused(
      "export", [f"--workdir={run}", f"--out={out}", "--overwrite"], run, tmp_path)
  (out / "notes.txt").unlink()

  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(HOME=str(tmp_path / "home"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  export = lambda *flags: _script("export", f"--workdir={run}", f"--out={out}", *flags, "--repeats=1", "--warmup=0",
                                  "--batch_sizes=1", env=env)
  done = export()  # into the empty directory
  assert done.returncode == 0, done.stderr[-3000:]
  assert "give --overwrite" in _refused("export", [f"--workdir={run}", f"--out={out}"], run, tmp_path)
  done = export("--overwrite")  # replaces the earlier export
  assert done.returncode == 0, done.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["checkpoint", "inference.jax_exported", "report.json", "report.md",
                                     "spec.json"]
  assert os.listdir(tmp_path / "home" / ".cache" / "msp" / "jax")
  assert sorted(os.listdir(tmp_path)) == ["export", "file", "home"]  # no staging directory left


@slow
def test_overrides_of_a_finished_run_need_no_config(run):
  out = _script("adapt_unseen", f"--workdir={run}", "--step=2", "--config.adapt.train=heads_and_backbone",
                "--config.adapt.steps=1")
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.exists(os.path.join(run, "adapt", "heads_and_backbone_step2.json"))


@pytest.mark.parametrize("name", ["meta_train", *(pytest.param(name, marks=slow)
                                                   for name in ("evaluate", "adapt_unseen", "export"))])
def test_help_shows_config(name):
  out = _script(name, "--help")
  assert "--config:" in out.stdout + out.stderr


def test_a_run_reading_script_refuses_a_bad_split_in_one_line(config_only_run, tmp_path):
  line = _refused("evaluate", [f"--workdir={config_only_run}", "--split=bogus"], config_only_run, tmp_path)
  assert line == ("error: --split='bogus' is not a split of synthetic_scenes; choose one of ['test', 'train', "
                  "'validation']")


def test_export_refuses_an_out_that_is_a_file_in_one_line(config_only_run, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  line = _refused("export", [f"--workdir={config_only_run}", f"--out={blocker}"], config_only_run, tmp_path)
  assert line == f"error: --out={str(blocker)!r} exists and is not a directory"


# In-process: the messages the scripts print (as `error: MESSAGE`) for the cases the slow tests run through them.

@pytest.mark.parametrize("overrides,message", [
    ({"model.head_width": 0}, "config.model.head_width=0 must be an integer ≥ 1"),
    ({"model.backbone.block": "bogus"}, "config.model.backbone.block='bogus'; choose one of"),
    ({"num_devices": 3}, "config.num_devices=3, but 1 device(s) are available"),
    ({"adapt.steps": -1}, "config.adapt.steps=-1 must be an integer ≥ 0"),
    ({"adapt.lr": -1.0}, "config.adapt.lr=-1.0 must be > 0"),
    ({"adapt.lr": 0.0}, "config.adapt.lr=0.0 must be > 0"),
    ({"checkpoint_every": 0}, "config.checkpoint_every=0 must be an integer ≥ 1"),
    ({"log_every": -1}, "config.log_every=-1 must be an integer ≥ 0"),
    ({"steps": 0}, "config.steps=0 must be an integer ≥ 1"),
    ({"steps": -3}, "config.steps=-3 must be an integer ≥ 1"),
])
def test_bad_config_values_name_the_key(data_dir, overrides, message):
  with pytest.raises(ConfigError) as error:
    validate_config(_tiny(data_dir, **overrides))
  assert str(error.value).startswith(message)


def test_an_unknown_dataset_is_refused_before_the_workdir_is_touched(data_dir, tmp_path):
  with pytest.raises(ConfigError, match=r"^config.data.name='bogus'; choose one of"):
    open_run(_tiny(data_dir, **{"data.name": "bogus"}), str(tmp_path / "w"))
  assert os.listdir(tmp_path) == []


def test_an_unknown_variant_is_named():
  with pytest.raises(ValueError, match="unknown variant 'bogus' of synthetic.py"):
    synthetic.get_config("bogus")


@pytest.mark.parametrize("key,argv,message", [
    ("meta.inner_stepz", [C, "--config.meta.inner_stepz=2"],
     "--config.meta.inner_stepz: the config has no key 'inner_stepz'; did you mean 'inner_steps'?"),
    ("adapt.trainz", ["--workdir=W", "--config.adapt.trainz=heads"],
     "--config.adapt.trainz: the config has no key 'trainz'; did you mean 'train'?"),
])
def test_an_unknown_config_key_is_named_with_a_suggestion(data_dir, key, argv, message):
  config = _tiny(data_dir)
  config.lock()
  parent, name = key.rsplit(".", 1)
  with pytest.raises((AttributeError, KeyError)) as error:
    setattr(config[parent], name, 1)
  assert script._unknown_key_message(str(error.value), argv) == message  # pylint: disable=protected-access


def test_a_bad_split_is_named(data_dir):
  with pytest.raises(ConfigError) as error:
    check_split(_tiny(data_dir), "bogus")
  assert str(error.value) == ("--split='bogus' is not a split of synthetic_scenes; choose one of ['test', 'train', "
                              "'validation']")


def test_a_finished_run_takes_only_overrides_its_checkpoints_do_not_depend_on():
  assert not may_differ_on_resume("model.head_width") and not may_differ_on_resume("steps_")
  assert all(may_differ_on_resume(key) for key in ("adapt.lr", "adapt.train", "eval.batch_size", "steps"))
