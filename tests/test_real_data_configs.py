"""experiments/configs/{nyuv2,celebamask_hq}.py end to end on fixture downloads: build, meta-train (augmenting,
fitting the stored size to the model's), evaluate the seen tasks and adapt to the unseen ones."""
import json
import os

import numpy as np
import pytest

from experiments.configs import celebamask_hq, nyuv2
from msp.train.adaptation import adapt_unseen
from msp.train.evaluation import evaluate_seen
from msp.train.run import open_run, train
from tests.test_celebamask_hq_builder import _write_release
from tests.test_nyuv2_builder import write_nyud_mt


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
