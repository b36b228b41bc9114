"""The comparison study's baselines as config variants: the `key=value` grammar, single_task, thin_dense (and its
width solver against an independent FLOPs count), budget/fixed_lambda/magnitude settings; every one builds for
every dataset config and trains a step; a bad argument is one `error:` line from the scripts."""
import fractions
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import celebamask_hq, common, nyuv2, synthetic
from experiments.run.training import load_config, open_run, train
from msp.models import build_model
from msp.models.factory import backbone_from_fields
from msp.sparsity import CostModel, GroupSpec, backbone_flops, flops_budget, thin_backbone
from msp.sparsity.thin import scaled_widths
from msp.tasks import build_tasks
from msp.train import build_meta_learner
from msp.train.adaptation import attach_heads
from tests.test_celebamask_hq_builder import _write_release
from tests.test_nyuv2_builder import write_nyud_mt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET_CONFIGS = {"synthetic.py": synthetic, "nyuv2.py": nyuv2, "celebamask_hq.py": celebamask_hq}


def keyed_forms(module) -> list[str]:
  """Every key=value modifier, as an argument of the dataset config `module` (the task: its last seen one)."""
  return [f"single_task,task={module.SEEN_TASKS[-1]}", "thin_dense,flops=0.3", "budget,flops=0.25",
          "fixed_lambda,lambda=0.02", "magnitude,flops=0.25,scope=global"]


def new_forms(module) -> list[str]:
  """The new variants with their defaults (tests/test_experiments.py and test_real_data_configs.py build those
  already, as members of common.VARIANTS) and every key=value modifier."""
  return [*common.STUDY_BASELINES, *keyed_forms(module)]


# ------------------------------------------------------------------------------------------------ the grammar

def test_each_setting_lands_in_its_config_key():
  plain = synthetic.get_config("budget")
  assert (plain.budget.target_kind, plain.budget.target) == ("channels_removed", 0.5)
  flops = synthetic.get_config("budget,flops=0.25")
  assert flops.budget.enabled and (flops.budget.target_kind, flops.budget.target) == ("flops_kept", 0.25)
  assert flops_budget(flops) and not flops_budget(plain)
  assert synthetic.get_config("fixed_lambda,lambda=0.02").sparsity.lambda_init == 0.02
  assert synthetic.get_config("fixed_lambda").sparsity.lambda_init == 0.05

  dense = synthetic.get_config("dense_mtl").to_dict()
  single = synthetic.get_config("single_task,task=depth").to_dict()
  assert single["seen_tasks"] == ("depth",)
  assert synthetic.get_config("single_task").seen_tasks == ("segmentation",)  # the first seen task
  # tiny's fewer seen tasks do not limit the choice: task= names any of the dataset config's seen tasks
  assert synthetic.get_config("single_task,task=normals,tiny").seen_tasks == ("normals",)

  magnitude = synthetic.get_config("magnitude,flops=0.25,scope=global").to_dict()
  assert magnitude["prune"] == {"scope": "global", "flops_kept": 0.25, "pattern_from": None}
  assert synthetic.get_config("magnitude").prune.to_dict() == {"scope": "uniform", "flops_kept": 0.5, "pattern_from": None}
  # all but the variant's name and its own section equal dense_mtl's: a dense_mtl checkpoint fits them
  differing = lambda config: {k for k in config if config[k] != dense[k]}
  assert differing(single) == {"variant", "seen_tasks"} and differing(magnitude) == {"variant", "prune"}
  thin = synthetic.get_config("thin_dense,flops=0.25").to_dict()
  assert differing(thin) == {"variant", "model"}
  assert {k for k in thin["model"] if thin["model"][k] != dense["model"].get(k)} == {
      "backbone", "width_factor", "flops_fraction"}


@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_thin_dense_resolves_the_widths_into_the_config(name):
  module = DATASET_CONFIGS[name]
  full, thin = module.get_config("dense_mtl,tiny"), module.get_config("thin_dense,flops=0.3,tiny")
  s = thin.model.width_factor
  assert thin.model.backbone.widths == tuple(max(1, math.floor(s * w + 0.5)) for w in full.model.backbone.widths)
  assert thin.model.backbone.stem_width == max(1, math.floor(s * full.model.backbone.stem_width + 0.5))
  # the learner, and whatever else rebuilds the model from config.model, sees the thin widths
  learner = build_meta_learner(thin)
  assert learner.model.backbone.widths == thin.model.backbone.widths
  assert learner.cost_model.dense_flops / build_meta_learner(full).cost_model.dense_flops == pytest.approx(
      thin.model.flops_fraction, rel=1e-12)
  assert 0 < thin.model.flops_fraction <= 0.3


@pytest.mark.parametrize("arg,problem,takes", [
    ("budget,flopz=0.2", "unknown key 'flopz'", "variant 'budget' takes flops= ("),
    ("budget,flops=1.5", "flops='1.5' is not a fraction in (0, 1)", "variant 'budget' takes flops= ("),
    ("budget,flops=0.2,flops=0.3", "flops= is given twice", "variant 'budget' takes flops= ("),
    ("maml,flops=0.2", "unknown key 'flops'", "variant 'maml' takes no keys"),
    ("single_task,task=edges", "task='edges' is not one of the seen tasks ('segmentation', 'depth', 'normals', "
     "'camera_looks_down', 'checkered_floor')", "variant 'single_task' takes task= ("),
    ("magnitude,scope=everywhere,tiny", "scope='everywhere' is not one of ('uniform', 'global')",
     "variant 'magnitude' takes flops= (the backbone's FLOPs kept, a fraction in (0, 1); default 0.5), scope= ("),
    ("fixed_lambda,lambda=-1", "lambda='-1' is not a number > 0", "variant 'fixed_lambda' takes lambda= ("),
    ("fixed_lambda,lambda=nan", "lambda='nan' is not a number > 0", "variant 'fixed_lambda' takes lambda= ("),
    ("thin_dense,flops=0.01,tiny", "the narrowest backbone (every width at its minimum) keeps 0.1372 of the FLOPs, "
     "more than the target 0.01", None),
])
def test_a_bad_key_value_names_the_file_the_variant_and_its_keys(arg, problem, takes):
  with pytest.raises(ValueError) as info:
    synthetic.get_config(arg)
  message = str(info.value)
  assert message.startswith(f"synthetic.py:{arg}: {problem}") and "\n" not in message
  assert takes is None or f"; {takes}" in message


def test_real_data_configs_check_their_own_seen_tasks():
  assert nyuv2.get_config("single_task,task=normals,mtan,tiny").seen_tasks == ("normals",)
  with pytest.raises(ValueError, match=r"^celebamask_hq.py:single_task,task=depth: task='depth' is not one of the "
                     r"seen tasks \('segmentation', 'Male', 'Smiling'\); variant 'single_task' takes task="):
    celebamask_hq.get_config("single_task,task=depth")
  with pytest.raises(ValueError, match="unknown variant 'thin_dense,huge' of nyuv2.py"):
    nyuv2.get_config("thin_dense,huge")


def test_a_bad_key_value_is_one_error_line_from_meta_train(tmp_path):
  out = subprocess.run([sys.executable, "experiments/meta_train.py",
                        "--config=experiments/configs/synthetic.py:magnitude,flops=2,tiny",
                        f"--workdir={tmp_path / 'w'}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": ROOT})
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
  assert lines[0].startswith("error: --config=experiments/configs/synthetic.py:magnitude,flops=2,tiny: "
                             "synthetic.py:magnitude,flops=2,tiny: flops='2' is not a fraction in (0, 1); "
                             "variant 'magnitude' takes flops=")
  assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------------------------------ the width solver

def hand_flops(stem_width: int, widths, depths, strides, image_size: int) -> int:
  """FLOPs of a basic-block ResNet with a simple stem (3×3 conv at stride 1), 'SAME' padding, batch 1: 2 per
  multiply-add of every conv, counted by hand (no Flax, no cost model)."""
  size, channels = image_size, stem_width
  total = 2 * size * size * 9 * 3 * stem_width
  for width, depth, stride in zip(widths, depths, strides):
    for block in range(depth):
      step = stride if block == 0 else 1
      size = -(-size // step)
      total += 2 * size * size * 9 * (channels * width + width * width)  # conv1, conv2
      if step != 1 or channels != width:
        total += 2 * size * size * channels * width  # 1×1 projection shortcut
      channels = width
  return total


def reachable(stem_width: int, widths) -> list[tuple[int, tuple[int, ...]]]:
  """Every (stem width, widths) one factor s ≥ 0 gives with ⌊s·w + ½⌋ (at least 1), in exact arithmetic: the
  widths change only where s·w = k + ½ for some width w."""
  jumps = {fractions.Fraction(0)} | {fractions.Fraction(2 * k + 1, 2 * w) for w in (stem_width, *widths)
                                      for k in range(w + 1)}
  scale = lambda s, w: max(1, math.floor(s * w + fractions.Fraction(1, 2)))
  return sorted({(scale(s, stem_width), tuple(scale(s, w) for w in widths)) for s in jumps if s <= 1})


BACKBONE = dict(block="basic", stem="simple", stem_width=6, depths=(1, 2), widths=(5, 12), strides=(2, 2),
                dilations=(1, 1), activation="relu")


def test_backbone_flops_is_the_hand_count_and_the_cost_models():
  count = hand_flops(6, (5, 12), (1, 2), (2, 2), 20)
  assert backbone_flops(backbone_from_fields(BACKBONE), 20) == count
  config = synthetic.get_config("dense_mtl,tiny")
  model = build_model(config.model, build_tasks(config.tasks, config.seen_tasks))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)), train=False))
  cost_model = CostModel.from_model(model, GroupSpec.from_params(variables["params"]), 32)
  assert backbone_flops(model.backbone, 32) == cost_model.dense_flops


@pytest.mark.parametrize("target", [0.2, 0.5, 0.77])
def test_thin_backbone_is_the_largest_reachable_fraction_not_above_the_target(target):
  full = hand_flops(6, (5, 12), (1, 2), (2, 2), 20)
  fractions_by_widths = {widths: hand_flops(stem, widths, (1, 2), (2, 2), 20) / full
                         for stem, widths in reachable(6, (5, 12))}
  best = max(f for f in fractions_by_widths.values() if f <= target)
  next_above = min(f for f in fractions_by_widths.values() if f > target)
  thin = thin_backbone(BACKBONE, target, 20)
  assert thin.flops_fraction == pytest.approx(best, rel=1e-12) and best <= target < next_above
  assert thin.flops_fraction == pytest.approx(fractions_by_widths[thin.fields["widths"]], rel=1e-12)
  assert thin.fields == scaled_widths(BACKBONE, thin.width_factor)
  assert {k: v for k, v in thin.fields.items() if k not in ("stem_width", "widths")} == {
      k: v for k, v in BACKBONE.items() if k not in ("stem_width", "widths")}


def test_thin_backbone_limits():
  assert scaled_widths(dict(BACKBONE, stem="deep", stem_width=8), 0.0)["stem_width"] == 2  # deep stems halve it
  assert thin_backbone(BACKBONE, 1.0, 20).fields == scaled_widths(BACKBONE, 1.0)
  with pytest.raises(ValueError, match="per-conv widths"):
    thin_backbone(dict(BACKBONE, conv_widths=[["stage1_block0/conv1", 2]]), 0.5, 20)
  with pytest.raises(ValueError, match="must lie in"):
    thin_backbone(BACKBONE, 0.0, 20)


# ------------------------------------------------------------------------------------------------ builds and steps

@pytest.mark.parametrize("name", DATASET_CONFIGS)
def test_every_new_form_builds_its_learner(name):
  module = DATASET_CONFIGS[name]
  for arg in keyed_forms(module):
    config = module.get_config(f"{arg},tiny")
    learner = build_meta_learner(config)
    assert [t.name for t in learner.tasks] == list(config.seen_tasks) and learner.spec.num_layers > 0, arg


def _one_step(config, workdir):
  _, history = train(config, workdir, progress=False)
  assert len(history) == 1 and np.isfinite(history[-1]["loss"])
  return history[-1]


@pytest.mark.slow
@pytest.mark.parametrize("arg", new_forms(synthetic))
def test_each_new_form_trains_a_step_on_synthetic(data_dir, tmp_path, arg):
  config = synthetic.get_config(f"{arg},tiny")
  config.data.data_dir = data_dir
  config.steps = 1
  record = _one_step(config, str(tmp_path / "run"))
  assert len(record["task_loss"]) == len(config.seen_tasks)
  if arg.startswith(("single_task", "thin_dense", "magnitude")):
    assert float(record["group_sparsity_total"]) == 0.0
  if config.meta.mode == "joint":  # no meta-learning: λ stays at its initial value
    np.testing.assert_allclose(record["lambda"], config.sparsity.lambda_init, rtol=1e-6)
  if arg.startswith("thin_dense"):  # config.json holds the thin widths: what reads the run rebuilds the thin net
    saved = load_config(str(tmp_path / "run"))
    assert tuple(saved.model.backbone.widths) == config.model.backbone.widths
    assert saved.model.width_factor == config.model.width_factor
    run = open_run(saved, str(tmp_path / "run"))
    try:
      _, state = run.trained_state()
    finally:
      run.close()
    model, _, _ = attach_heads(saved.model, saved.tasks, run.learner.tasks, saved.unseen_tasks,
                               {"params": state.params, "batch_stats": state.batch_stats}, saved.image_size, 0)
    shape = lambda backbone: (backbone.stem_width, tuple(backbone.widths), tuple(backbone.depths))
    rebuilt = (model.backbone, run.learner.model.backbone, build_meta_learner(config).model.backbone)
    assert len({shape(backbone) for backbone in rebuilt}) == 1
    assert shape(model.backbone)[:2] == (config.model.backbone.stem_width, config.model.backbone.widths)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
  """Fixture downloads of NYU-v2 and CelebAMask-HQ, and one tfds directory that builds both on first use."""
  root = tmp_path_factory.mktemp("downloads")
  write_nyud_mt(root / "nyuv2", "npy")
  _write_release(str(root / "CelebAMask-HQ"))
  return {"nyuv2.py": str(root / "nyuv2"), "celebamask_hq.py": str(root / "CelebAMask-HQ"), "tfds": str(root / "tfds")}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nyuv2.py", "celebamask_hq.py"])
def test_each_new_form_trains_a_step_on_real_data_fixtures(downloads, tmp_path, name):
  module = DATASET_CONFIGS[name]
  for i, arg in enumerate(keyed_forms(module)):  # the defaults compile the same programs as synthetic's
    config = module.get_config(f"{arg},tiny")
    config.data.manual_dir, config.data.data_dir = downloads[name], downloads["tfds"]
    config.steps = 1
    _one_step(config, str(tmp_path / f"run{i}"))
