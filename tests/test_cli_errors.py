"""The scripts' command lines: every bad input ends with one `error: ...` line on stderr and exit status 2, writes
nothing; overrides of a finished run's config; --help; export's --overwrite; the default compile cache."""
import hashlib
import os

import pytest

from tests.test_experiments import _script

C = "--config=experiments/configs/synthetic.py:budget,tiny"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
  """A finished tiny run (4 steps) through the script."""
  workdir = str(tmp_path_factory.mktemp("run") / "budget")
  out = _script("meta_train", C, f"--workdir={workdir}", f"--config.data.data_dir={data_dir}")
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


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
    ([C, "--config.meta.inner_stepz=2"],
     "--config.meta.inner_stepz: the config has no key 'inner_stepz'; did you mean 'inner_steps'?"),
    (["--config=experiments/configs/nope.py"], "--config=experiments/configs/nope.py: no such file"),
    (["--config=experiments/configs/synthetic.py:bogus"], "unknown variant 'bogus' of synthetic.py"),
    ([C, "--config.model.head_width=0"], "config.model.head_width=0 must be an integer ≥ 1"),
    ([C, "--config.model.backbone.block=bogus"], "config.model.backbone.block='bogus'; choose one of"),
    ([C, "--config.num_devices=3"], "config.num_devices=3, but 1 device(s) are available"),
    ([C, "--config.data.name=bogus"], "config.data.name='bogus'; choose one of"),
    ([C, "--config.adapt.steps=-1"], "config.adapt.steps=-1 must be an integer ≥ 0"),
    ([C, "--config.adapt.lr=-1"], "config.adapt.lr=-1.0 must be > 0"),
    ([C, "--config.adapt.lr=0"], "config.adapt.lr=0.0 must be > 0"),
    ([C, "--config.checkpoint_every=0"], "config.checkpoint_every=0 must be an integer ≥ 1"),
    ([C, "--config.log_every=-1"], "config.log_every=-1 must be an integer ≥ 0"),
    ([C, "--config.steps=0"], "config.steps=0 must be an integer ≥ 1"),
    ([C, "--config.steps=-3"], "config.steps=-3 must be an integer ≥ 1"),
    ([C, "--bogus"], "Unknown command line flag 'bogus'"),
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
def test_bad_input_to_a_finished_run_is_one_line(run, tmp_path, name, args, message):
  args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
  assert message in _refused(name, [f"--workdir={run}", *args], run, tmp_path)


def test_export_refuses_a_file_or_a_non_empty_out_unless_overwrite(run, tmp_path):
  """Also: without JAX_COMPILATION_CACHE_DIR the scripts cache compiled programs in ~/.cache/msp/jax."""
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  assert "exists and is not a directory" in _refused("export", [f"--workdir={run}", f"--out={blocker}"], run,
                                                     tmp_path)
  out = tmp_path / "export"
  out.mkdir()
  (out / "earlier.txt").write_text("an earlier export")
  assert "give --overwrite" in _refused("export", [f"--workdir={run}", f"--out={out}"], run, tmp_path)

  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(HOME=str(tmp_path / "home"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  done = _script("export", f"--workdir={run}", f"--out={out}", "--overwrite", "--repeats=1", "--warmup=0",
                 "--batch_sizes=1", env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["checkpoint", "inference.jax_exported", "report.json", "report.md",
                                     "spec.json"]
  assert os.listdir(tmp_path / "home" / ".cache" / "msp" / "jax")
  assert sorted(os.listdir(tmp_path)) == ["export", "file", "home"]  # no staging directory left


def test_overrides_of_a_finished_run_need_no_config(run):
  out = _script("adapt_unseen", f"--workdir={run}", "--step=2", "--config.adapt.train=heads_and_backbone",
                "--config.adapt.steps=1")
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.exists(os.path.join(run, "adapt", "heads_and_backbone_step2.json"))


@pytest.mark.parametrize("name", ["meta_train", "evaluate", "adapt_unseen", "export"])
def test_help_shows_config(name):
  out = _script(name, "--help")
  assert "--config:" in out.stdout + out.stderr
