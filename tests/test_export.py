"""Physical pruning is exact and removes exactly the dead channels; the export runs with jax alone."""
import functools
import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from experiments.configs import synthetic
from msp.export import load, load_spec
from msp.export.loader import INFERENCE_FILE, REQUIREMENTS
from msp.export.artifact import restore, serialize_inference, spec_dict, write_artifact
from msp.export.prune import (ExportError, check_exact, kept_channels, max_abs_differences,
                              plan_pruning, prune)
from msp.export.report import count_params
from msp.models import MultiTaskNet, ResNet
from msp.sparsity import GroupSpec
from msp.train.config import defaults
from experiments.run.training import open_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16
HEADS = (("seg", "dense", 3), ("attr", "attribute", 2))
HEAD_WIDTH = 4
BACKBONES = {
    # stage 1: identity shortcut (stream = stem + stage1_block0/conv2); stage 2: projection then identity
    "basic": dict(depths=(1, 2), widths=(4, 6), strides=(1, 2), dilations=(1, 1), stem_width=4),
    "bottleneck_deep": dict(depths=(1, 2), widths=(2, 3), strides=(1, 2), dilations=(1, 2), block="bottleneck",
                            stem="deep", stem_width=4, activation="gelu"),
    "plain": dict(depths=(2, 1), widths=(5, 6), strides=(1, 2), block="plain", stem_width=4, activation="silu"),
}
TOLERANCE = 1e-5


def _net(name: str) -> MultiTaskNet:
  return MultiTaskNet(ResNet(**BACKBONES[name]), heads=HEADS, head_width=HEAD_WIDTH)


def _shapes(model: MultiTaskNet) -> dict:
  """{variable path tuple: shape} of `model`'s variables."""
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)), train=False))
  return {path: x.shape for path, x in traverse_util.flatten_dict(variables).items()}


def _kernel_shapes(model: MultiTaskNet) -> dict[str, tuple[int, ...]]:
  """{backbone conv path: its kernel's shape (kh, kw, I, O)}."""
  shapes = _shapes(model)
  return {conv: shapes[("params", "backbone", *conv.split("/"), "conv", "kernel")]
          for conv in model.backbone.channel_sources()[0]}


@functools.cache
def _variables(name: str) -> dict:
  """Random variables (numpy, no compiled init): kernels N(0, 1/fan_in), BatchNorm parameters and statistics and
  biases random too, so that a dead channel is zero only because its group is."""
  rng = np.random.default_rng(1)
  flat = {}
  for path, shape in _shapes(_net(name)).items():
    if path[-1] == "kernel":
      flat[path] = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
    elif path[-1] == "var":
      flat[path] = rng.uniform(0.5, 2.0, shape)
    else:
      flat[path] = rng.normal(1.0 if path[-1] == "scale" else 0.0, 0.5, shape)
  return jax.tree.map(jnp.float32, traverse_util.unflatten_dict(flat))


def _masked(name: str, dead: dict[str, list[int]]) -> dict:
  """The variables with the out_channel groups dead[conv] (channel indices per backbone conv path) zeroed."""
  variables = _variables(name)
  spec = GroupSpec.from_params(variables["params"])
  factors = []
  for layer in spec.layers:
    factor = np.ones(layer.num_groups, np.float32)
    factor[dead.get(layer.name.removeprefix("backbone/"), [])] = 0.0
    factors.append(jnp.asarray(factor))
  return {**variables, "params": spec.scale_groups(variables["params"], factors)}


def _expected_widths(model: MultiTaskNet, dead: dict[str, list[int]], multiple_of: int) -> dict[str, int]:
  """Kept output channels per conv, computed as a fixed point: a channel alive in a conv is kept in every conv
  whose output is added to that conv's (repeated until nothing changes); at least one, rounded up."""
  sources, features = model.backbone.channel_sources()
  kept = {conv: np.isin(np.arange(shape[3]), dead.get(conv, []), invert=True)
          for conv, shape in _kernel_shapes(model).items()}
  changed = True
  while changed:
    changed = False
    for producers in (*sources.values(), features):
      union = np.any([kept[c] for c in producers], axis=0)
      for c in producers:
        changed |= not np.array_equal(kept[c], union)
        kept[c] = union
  return {c: min(len(k), -(-max(int(k.sum()), 1) // multiple_of) * multiple_of) for c, k in kept.items()}


def _expected_removed_params(model: MultiTaskNet, widths: dict[str, int]) -> int:
  """Parameters that pruning to `widths` removes: each conv's kernel (kh·kw·I·O) and BatchNorm (2·O), and each
  head's feature conv (9·C_features·head_width)."""
  sources, features = model.backbone.channel_sources()
  kernels = _kernel_shapes(model)
  removed = 0
  for conv, srcs in sources.items():
    kh, kw, i, o = kernels[conv]
    new_i = widths[srcs[0]] if srcs else i
    removed += kh * kw * (i * o - new_i * widths[conv]) + 2 * (o - widths[conv])
  dense_features = kernels[features[0]][3]
  return removed + len(model.heads) * 9 * (dense_features - widths[features[0]]) * HEAD_WIDTH


def _random_dead(model: MultiTaskNet, rng: np.random.Generator) -> dict[str, list[int]]:
  """Each conv's channels die with a probability of 0, 1 or uniform in [0, 1], drawn per conv."""
  dead = {}
  for conv, shape in _kernel_shapes(model).items():
    p = rng.choice([0.0, 1.0, rng.uniform()])
    dead[conv] = np.flatnonzero(rng.uniform(size=shape[3]) < p).tolist()
  return dead


def _check_export(name: str, dead: dict[str, list[int]], multiple_of: int = 1):
  """Prunes the masked network and checks exactness, the widths and the parameter count; returns both networks."""
  model, variables = _net(name), _masked(name, dead)
  plan = plan_pruning(model, variables["params"], multiple_of)
  pruned_model, pruned_variables = prune(model, variables, plan)
  images = jax.random.uniform(jax.random.key(2), (2, SIZE, SIZE, 3))
  differences = max_abs_differences(model.apply(variables, images, train=False),
                                    pruned_model.apply(pruned_variables, images, train=False))
  assert set(differences) == {"seg", "attr"}
  assert max(differences.values()) <= TOLERANCE, differences
  widths = _expected_widths(model, dead, multiple_of)
  assert {conv: len(kept) for conv, kept in plan.kept.items()} == widths
  assert all(np.all(np.isin(np.setdiff1d(np.arange(plan.dense[c]), kept), dead.get(c, [])))
             for c, kept in plan.kept.items()), "a removed channel was alive"
  removed = _expected_removed_params(model, widths)
  assert count_params(variables["params"]) - count_params(pruned_variables["params"]) == removed
  return (model, variables), (pruned_model, pruned_variables), plan


def test_channel_spaces_group_the_producers_of_each_residual_stream():
  assert _net("basic").backbone.channel_spaces() == [
      ("stage0_conv1", "stage1_block0/conv2"), ("stage1_block0/conv1",), ("stage2_block0/conv1",),
      ("stage2_block0/conv2", "stage2_block0/shortcut", "stage2_block1/conv2"), ("stage2_block1/conv1",)]


@pytest.mark.parametrize("alive,multiple_of,expected", [
    ([1, 0, 1, 0, 0], 1, [0, 2]),
    ([0, 0, 0], 1, [0]),  # an all-dead space keeps one zero channel
    ([0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1], 4, [0, 1, 2, 3, 4, 5, 9, 10]),  # 5 alive → 8, lowest dead first
    ([1, 0, 1, 1, 1, 1], 8, [0, 1, 2, 3, 4, 5]),  # never beyond the dense width
])
def test_kept_channels(alive, multiple_of, expected):
  np.testing.assert_array_equal(kept_channels(np.array(alive, bool), multiple_of), sorted(expected))


def test_fully_dense_network_exports_as_the_identity():
  (model, variables), (pruned_model, pruned_variables), plan = _check_export("basic", {})
  assert plan.conv_widths == () and pruned_model == model
  jax.tree.map(np.testing.assert_array_equal, pruned_variables, variables)


@pytest.mark.parametrize("case,dead", [
    # a block whose every channel is dead: its branch keeps one zero channel, the stream it adds to stays
    ("dead_block", {"stage2_block1/conv1": range(6), "stage2_block1/conv2": range(6)}),
    # stream channel 0 is dead in two of its three producers (kept), channel 1 in all three (removed);
    # stem channel 2 is dead but stage1_block0/conv2 keeps it alive in the stage-1 stream
    ("partly_dead_stream", {"stage2_block0/conv2": [0, 1, 4], "stage2_block0/shortcut": [0, 1],
                            "stage2_block1/conv2": [1, 3], "stage0_conv1": [2]}),
    # all of stage 2 dead: the heads read one zero channel
    ("dead_stage", {c: range(6) for c in ("stage2_block0/conv1", "stage2_block0/conv2", "stage2_block0/shortcut",
                                          "stage2_block1/conv1", "stage2_block1/conv2")}),
    # a dead first conv makes the next conv's BatchNorm output a constant, which its consumers still see
    ("dead_conv_before_alive_conv", {"stage1_block0/conv1": range(4), "stage2_block0/conv1": [0, 5]}),
])
def test_designed_patterns_are_exact_and_remove_exactly_the_dead_channels(case, dead):
  _, (pruned_model, _), plan = _check_export("basic", {c: list(v) for c, v in dead.items()})
  widths = dict(plan.conv_widths)
  if case == "dead_block":
    assert widths == {"stage2_block1/conv1": 1}
  elif case == "partly_dead_stream":
    np.testing.assert_array_equal(plan.feature_channels, [0, 2, 3, 4, 5])
    assert "stage0_conv1" not in widths
  elif case == "dead_stage":
    np.testing.assert_array_equal(plan.feature_channels, [0])
  assert pruned_model.backbone.conv_widths == plan.conv_widths


@pytest.mark.parametrize("name,seeds", [("basic", range(3)), ("bottleneck_deep", range(2)), ("plain", range(1))])
def test_random_dead_patterns_are_exact_and_remove_exactly_the_dead_channels(name, seeds):
  for seed in seeds:
    rng = np.random.default_rng(seed)
    _check_export(name, _random_dead(_net(name), rng), multiple_of=int(rng.choice([1, 1, 4])))


def test_activation_that_does_not_keep_zero_is_refused():
  model = MultiTaskNet(ResNet(activation="softplus"), heads=HEADS)
  with pytest.raises(ExportError, match="softplus"):
    plan_pruning(model, params=None)


def test_check_exact_names_the_tasks_over_tolerance():
  check_exact({"seg": 1e-6, "attr": 0.0}, 1e-5)
  with pytest.raises(ExportError, match="seg 0.1"):
    check_exact({"seg": 0.1, "attr": 0.0}, 1e-5)


def test_unknown_conv_width_is_refused():
  with pytest.raises(ValueError, match="stage9"):
    ResNet(conv_widths=(("stage9_block0/conv1", 2),)).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)


_LOAD_SCRIPT = """
import sys
import numpy as np
import msp.export
forward = msp.export.load(sys.argv[1])
images = np.load(sys.argv[2])
for batch in (1, len(images)):
  outputs = forward(images[:batch])
  np.savez(f"{sys.argv[3]}_{batch}.npz", **outputs)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "optax", "orbax") or m.startswith(
    ("msp.train", "msp.models", "msp.sparsity", "msp.meta", "msp.export.prune", "msp.export.artifact")))
print(" ".join(heavy))
"""


def test_artifact_runs_with_jax_alone_at_any_batch_size_and_restores_as_flax(tmp_path):
  dead = {"stage1_block0/conv1": [1, 2], "stage2_block0/conv2": [0, 1, 2], "stage2_block0/shortcut": [1, 2, 5],
          "stage2_block1/conv2": [1, 2]}
  (model, variables), (pruned_model, pruned_variables), plan = _check_export("basic", dead, multiple_of=4)
  out = str(tmp_path / "export")
  model_config = {**defaults("model").model.to_dict(), "backbone": BACKBONES["basic"], "head_width": HEAD_WIDTH}
  spec = spec_dict(pruned_model, model_config, plan, SIZE, ("cpu",), {"test": True})
  write_artifact(out, spec, pruned_variables,
                 serialize_inference(pruned_model, pruned_variables, SIZE))

  images = np.asarray(jax.random.uniform(jax.random.key(3), (3, SIZE, SIZE, 3)))
  np.save(tmp_path / "images.npy", images)
  result = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, out, str(tmp_path / "images.npy"),
                           str(tmp_path / "outputs")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == "", f"the loader imported {result.stdout}"
  dense = model.apply(variables, images, train=False)
  for batch in (1, 3):
    loaded = np.load(tmp_path / f"outputs_{batch}.npz")
    assert set(loaded.files) == {"seg", "attr"}
    for task in loaded.files:
      assert loaded[task].shape == dense[task][:batch].shape
      np.testing.assert_allclose(loaded[task], dense[task][:batch], rtol=0, atol=TOLERANCE)

  saved = load_spec(out)
  assert saved["outputs"] == {"seg": {"kind": "dense", "shape": ["b", SIZE, SIZE, 3]},
                              "attr": {"kind": "attribute", "shape": ["b", 2]}}
  assert saved["kept_channels"] == {conv: kept.tolist() for conv, kept in plan.kept.items()}
  restored_model, restored_variables = restore(out)
  assert restored_model == pruned_model
  jax.tree.map(np.testing.assert_array_equal, restored_variables, pruned_variables)
  np.testing.assert_allclose(load(out)(images)["attr"], dense["attr"], rtol=0, atol=TOLERANCE)


_ISOLATED_LOAD_SCRIPT = """
import sys
import numpy as np
import msp.export
outputs = msp.export.load(sys.argv[1])(np.zeros((2, int(sys.argv[2]), int(sys.argv[2]), 3), np.float32))
assert {task: output.shape[0] for task, output in outputs.items()} == {"seg": 2, "attr": 2}
site = sys.argv[3] + "/"
files = [getattr(module, "__file__", None) or "" for module in list(sys.modules.values())]
print(" ".join(sorted({file.removeprefix(site).split("/")[0] for file in files if file.startswith(site)})))
"""


def test_the_loader_needs_exactly_its_stated_requirements(tmp_path):
  """`msp.export.load` runs in an interpreter that can import only the standard library, the loader's two modules
  and the distributions of `REQUIREMENTS` (at requirements.lock's versions), and imports from every one of them."""
  with open(os.path.join(ROOT, "requirements.lock"), encoding="utf-8") as f:
    lock = dict(line.strip().split("==") for line in f if "==" in line and not line.startswith("#"))
  site = tmp_path / "site"
  (site / "msp" / "export").mkdir(parents=True)
  for module in ("__init__.py", "export/__init__.py", "export/loader.py"):
    shutil.copy(os.path.join(ROOT, "msp", module), site / "msp" / module)
  owner = {"msp": "msp"}  # top-level entry of `site` → the distribution that installed it
  for requirement in REQUIREMENTS:
    name, version = requirement.split("==")
    assert lock.get(name) == version, f"{requirement}: requirements.lock pins {name}=={lock.get(name)}"
    distribution = importlib.metadata.distribution(name)
    for top in {pathlib.PurePath(file).parts[0] for file in distribution.files} - {".."}:
      owner[top] = name
      (site / top).symlink_to(distribution.locate_file(top))
  export = tmp_path / "export"
  export.mkdir()
  (export / INFERENCE_FILE).write_bytes(serialize_inference(_net("basic"), _variables("basic"), SIZE))

  env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JAX_"))}
  # -S: no site-packages, so the interpreter sees the standard library and `site` alone
  result = subprocess.run([sys.executable, "-S", "-s", "-c", _ISOLATED_LOAD_SCRIPT, str(export), str(SIZE),
                           str(site)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHONPATH": str(site)})
  assert result.returncode == 0, result.stderr[-3000:]
  imported = {owner[top] for top in result.stdout.split()} - {"msp"}
  stated = {requirement.split("==")[0] for requirement in REQUIREMENTS}
  assert imported == stated, f"imported from {sorted(imported)}, stated {sorted(stated)}"


def _export_script(*args):
  return subprocess.run([sys.executable, "experiments/export.py", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=900, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.slow
def test_export_script_on_a_run_checkpoint(tmp_path):
  """experiments/export.py on a tiny run's checkpoint whose state has dead channels: artifact, report, refusal."""
  config = synthetic.get_config("budget,tiny")
  config.data.data_dir = str(tmp_path / "tfds")
  workdir = str(tmp_path / "run")
  run = open_run(config, workdir)
  try:
    state = run.fresh_state()
    dead = {"stage1_block0/conv1": [0, 1, 2], "stage2_block0/conv1": range(8), "stage2_block0/conv2": [0, 1, 3],
            "stage2_block0/shortcut": [1, 2, 3]}
    factors = [jnp.ones(layer.num_groups).at[jnp.asarray(dead.get(layer.name.removeprefix("backbone/"), []),
                                                         int)].set(0.0) for layer in run.learner.spec.layers]
    run.checkpointer.save(3, state.replace(params=run.learner.spec.scale_groups(state.params, factors)),
                          {"next_index": 3}, force=True)
  finally:
    run.close()
  out = str(tmp_path / "export")
  result = _export_script(f"--checkpoint={workdir}/checkpoints/3", f"--out={out}", "--multiple_of=2", "--repeats=2",
                          "--warmup=1", "--batch_sizes=1,2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| latency, batch 2 (ms) |" in result.stdout and "| stage2_block0/shortcut | 8 | 6 |" in result.stdout
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  # 1 → 2 (multiple of 2), 0 → 1 → 2, and the stream's channels 1 and 3, dead in both producers
  assert {conv: c["kept"] for conv, c in report["channels"].items() if c["kept"] != c["dense"]} == {
      "stage1_block0/conv1": 2, "stage2_block0/conv1": 2, "stage2_block0/conv2": 6, "stage2_block0/shortcut": 6}
  assert report["ratio"]["params"] > 1 and report["ratio"]["backbone_flops"] > 1
  assert max(report["max_abs_difference"].values()) <= TOLERANCE and report["source"]["step"] == 3
  outputs = load(out)(np.zeros((2, config.image_size, config.image_size, 3), np.float32))
  assert set(outputs) == set(config.seen_tasks)

  refused = _export_script(f"--checkpoint={workdir}/checkpoints/3", f"--workdir={workdir}", f"--out={out}")
  assert refused.returncode == 2 and "give either" in refused.stderr


@pytest.mark.slow
def test_export_script_needs_no_dataset(tmp_path):
  """A trained run exports after its dataset directory is deleted, and the export does not build it again."""
  data_dir, workdir, out = tmp_path / "tfds", str(tmp_path / "run"), str(tmp_path / "export")
  trained = subprocess.run([sys.executable, "experiments/meta_train.py",
                            "--config=experiments/configs/synthetic.py:budget,tiny", f"--workdir={workdir}",
                            f"--config.data.data_dir={data_dir}"], cwd=ROOT, capture_output=True, text=True,
                           timeout=900, env={**os.environ, "PYTHONPATH": ROOT})
  assert trained.returncode == 0, trained.stderr[-3000:]
  shutil.rmtree(data_dir)
  result = _export_script(f"--workdir={workdir}", f"--out={out}", "--repeats=1", "--warmup=0", "--batch_sizes=1")
  assert result.returncode == 0, result.stderr[-3000:]
  assert load_spec(out)["source"]["step"] == 4 and not data_dir.exists()
  with open(os.path.join(out, "report.md"), encoding="utf-8") as f:  # the command as typed, not as parsed
    assert f.readline().startswith(f"Made by `python experiments/export.py --workdir={workdir} --out={out} "
                                   "--repeats=1 --warmup=0 --batch_sizes=1` at commit ")
