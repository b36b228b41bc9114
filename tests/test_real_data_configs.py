"""experiments/configs/{nyuv2,celebamask_hq}.py end to end on fixture downloads: build, meta-train (augmenting,
fitting the stored size to the model's), evaluate the seen tasks and adapt to the unseen ones."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.configs import celebamask_hq, common, nyuv2
from msp.train import build_meta_learner
from experiments.run.unseen import adapt_unseen
from experiments.run.scoring import evaluate_seen
from experiments.run.training import open_run, train
from tests.test_celebamask_hq_builder import _write_release
from tests.test_nyuv2_builder import write_nyud_mt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_end_to_end(config, workdir):
  state, history = train(config, workdir, progress=False)
  assert int(state.step) == config.steps and np.isfinite(history[-1]["loss"])
  run = open_run(config, workdir)
  try:
    seen = evaluate_seen(run, state, progress=False)
    adapted = adapt_unseen(run, state, with_seen=False, progress=False)
  finally:
    run.close()
  assert set(seen) == set(config.seen_tasks) and set(adapted["unseen"]) == set(config.unseen_tasks)
  return seen, adapted["unseen"]


@pytest.mark.slow
def test_nyuv2_config_runs_on_a_fixture_download(tmp_path):
  write_nyud_mt(tmp_path / "download", "npy")
  config = nyuv2.get_config("budget,tiny")
  config.data.manual_dir = str(tmp_path / "download")
  config.data.data_dir = str(tmp_path / "tfds")
  seen, unseen = _run_end_to_end(config, str(tmp_path / "run"))
  assert 0 <= seen["segmentation"]["miou"] <= 1 and seen["depth"]["abs_err"] > 0
  assert seen["normals"]["angle_mean"] > 0 and 0 <= unseen["edges"]["ods_f"] <= 1
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f)["data"]["config"] == "nyud_mt"


@pytest.mark.slow
def test_celebamask_hq_config_runs_on_a_fixture_download(tmp_path):
  _write_release(str(tmp_path / "CelebAMask-HQ"))
  config = celebamask_hq.get_config("meta_sparsity,hair_skin3,tiny")
  config.data.manual_dir = str(tmp_path / "CelebAMask-HQ")
  config.data.data_dir = str(tmp_path / "tfds")
  seen, unseen = _run_end_to_end(config, str(tmp_path / "run"))
  assert 0 <= seen["segmentation"]["miou"] <= 1 and 0 <= seen["Male"]["accuracy"] <= 1
  assert set(unseen) == set(celebamask_hq.UNSEEN_ATTRIBUTES)


@pytest.mark.parametrize("module,arg", [(nyuv2, "budget,mtan"), (celebamask_hq, "maml,parts19,hair_skin3"),
                                        (nyuv2, "budget,huge")])
def test_bad_config_arguments_are_refused(module, arg):
  with pytest.raises(ValueError, match=arg.split(",")[-1] if "huge" in arg else "several"):
    module.get_config(arg) if "mtan" not in arg else module.get_config("budget,mtan,nyud_mt")


def test_segmentation_classes_must_match_the_dataset(tmp_path):
  write_nyud_mt(tmp_path / "download", "npy")
  config = nyuv2.get_config("budget,mtan,tiny")  # 13 classes, but the download is NYUD_MT's 40
  config.data.config = "nyud_mt"
  config.data.manual_dir = str(tmp_path / "download")
  config.data.data_dir = str(tmp_path / "tfds")
  run = open_run(config, str(tmp_path / "run"))
  try:
    with pytest.raises(ValueError, match="config.tasks.segmentation.num_classes=13 but nyuv2/nyud_mt/1.0.0 has 40"):
      run.dataset.targets(config.tasks, config.seen_tasks)
  finally:
    run.close()


@pytest.mark.parametrize("module", [nyuv2, celebamask_hq])
@pytest.mark.parametrize("variant", common.VARIANTS)
def test_every_variant_builds_its_learner(module, variant):
  config = module.get_config(f"{variant},tiny")
  learner = build_meta_learner(config)
  assert [t.name for t in learner.tasks] == list(config.seen_tasks) and learner.spec.num_layers > 0


def test_builder_command_builds_a_fixture_download(tmp_path):
  write_nyud_mt(tmp_path / "download", "files")
  command = [sys.executable, "-m", "data_pipelines.nyuv2", f"--data_dir={tmp_path / 'tfds'}",
             f"--manual_dir={tmp_path / 'download'}", "--config=nyud_mt", "--resolution=6x8"]
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-2000:]
  assert "nyuv2/nyud_mt_resolution6x8 is in" in out.stdout and "train 3, test 2" in out.stdout
  broken = subprocess.run(command[:3] + [f"--manual_dir={tmp_path / 'nowhere'}", "--config=mtan"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
  assert broken.returncode == 2 and f"manual_dir {tmp_path / 'nowhere'} is not a directory" in broken.stderr
