"""A dataset of your own, from a config alone (docs/own_data.md): a tiny tfds dataset written here, prepared with tfds
and named by its directory in `config.data.config` (`data.name="tfds"`), meta-trained, evaluated, adapted and
exported by the scripts; no msp file is edited."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from data_pipelines.datasets import open_dataset
from experiments.configs import own_data
from msp.train import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Shapes(tfds.core.GeneratorBasedBuilder):
  """16² images of squares (class 1) and discs (class 2), a distance map, and two attributes."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(16, 16, 3), encoding_format="png"),
            "mask": tfds.features.Tensor(shape=(16, 16), dtype=np.uint8),
            "distance": tfds.features.Tensor(shape=(16, 16), dtype=np.float32),
            "attributes": tfds.features.Tensor(shape=(2,), dtype=np.uint8)}),
        metadata=tfds.core.MetadataDict(class_names=["background", "square", "disc"],
                                        attribute_names=["dark", "crowded"]))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0, 24), "validation": self._generate_examples(1, 8),
            "test": self._generate_examples(2, 8)}

  def _generate_examples(self, seed: int, count: int):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    for i in range(count):
      mask = np.zeros((16, 16), np.uint8)
      for _ in range(rng.integers(1, 4)):
        cy, cx, r = int(rng.integers(3, 13)), int(rng.integers(3, 13)), int(rng.integers(2, 4))
        if rng.random() < 0.5:
          mask[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] = 1
        else:
          mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
      dark = bool(rng.random() < 0.5)
      image = np.repeat((mask * 80 + (20 if dark else 120))[..., None], 3, axis=-1).astype(np.uint8)
      png = io.BytesIO()  # encoded here: tfds would need TensorFlow to encode it
      PIL.Image.fromarray(image).save(png, format="PNG")
      yield i, {"image": png.getvalue(), "mask": mask, "distance": (1.0 + yy / 8.0).astype(np.float32),
                "attributes": np.array([dark, (mask > 0).mean() > 0.2], np.uint8)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
  """The prepared dataset's directory, DATA_DIR/shapes/1.0.0."""
  builder = Shapes(data_dir=str(tmp_path_factory.mktemp("tfds")))
  builder.download_and_prepare(file_format="array_record")
  return builder.data_dir


def test_a_prepared_dataset_opens_from_its_directory_without_its_builder(prepared):
  config = own_data.get_config("budget,tiny")
  config.data.config = prepared
  dataset = open_dataset(config.data, config.image_size)
  assert dataset.attribute_names == ("dark", "crowded") and len(dataset.source("train")) == 24
  config.data.config = os.path.join(os.path.dirname(prepared), "9.9.9")
  with pytest.raises(ConfigError, match=r"config.data.config='.*9.9.9': no prepared tfds dataset there"):
    open_dataset(config.data, config.image_size)


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, f"experiments/{name}.py", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=900, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.slow
def test_the_worked_example_runs_end_to_end(prepared, tmp_path):
  """docs/own_data.md's commands: meta-train, evaluate, adapt to the unseen task, export."""
  workdir, config = str(tmp_path / "run"), f"--config=experiments/configs/own_data.py:budget,tiny"
  trained = _script("meta_train", config, f"--config.data.config={prepared}", f"--workdir={workdir}")
  assert trained.returncode == 0, trained.stderr[-3000:]
  for name, args in (("evaluate", ()), ("adapt_unseen", ()), ("export", (f"--out={tmp_path / 'export'}",
                                                                          "--repeats=1", "--batch_sizes=1"))):
    done = _script(name, f"--workdir={workdir}", *args)
    assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
  with open(next(os.path.join(workdir, "eval", f) for f in os.listdir(os.path.join(workdir, "eval"))
                 if f.endswith(".json"))) as f:
    results = json.load(f)["results"]
  assert set(results) == {"shape", "distance"} and 0 <= results["shape"]["miou"] <= 1
  adapted = [f for f in os.listdir(os.path.join(workdir, "adapt")) if f.endswith(".json")]
  assert adapted and os.path.exists(tmp_path / "export" / "inference.jax_exported")
