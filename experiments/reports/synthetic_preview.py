"""Draws the first examples of a synthetic_scenes split with their ground truth (experiments.reports.plots.synthetic_preview).

python experiments/reports/synthetic_preview.py --out=runs/reports/synthetic_preview.png [--num=4] [--split=train]
    [--config=res64] [--data_dir=DIR]

The dataset is opened as training does (`data_pipelines.datasets.open_dataset`): from --data_dir, else $TFDS_DATA_DIR,
else ~/tensorflow_datasets, rendered there first if it is not built yet. Only --out is written.
"""
import os

import ml_collections
from absl import flags

from data_pipelines import datasets
from data_pipelines.synthetic_scenes.builder import SyntheticScenes
from experiments.run import script
from experiments.reports import plots


def preview(out: str, num: int = 4, split: str = "train", config: str = "res64", data_dir: str | None = None,
            overrides: dict | None = None):
  """Writes the preview of the first `num` examples of `split` to `out` and returns the Figure; `overrides` are
  SyntheticScenesConfig fields replacing the config's (as `config.data.overrides`; e.g. a small test dataset)."""
  if num < 1:
    raise ValueError(f"--num must be at least 1, got {num}")
  dataset = datasets.open_dataset(ml_collections.ConfigDict(
      {"name": "synthetic_scenes", "config": config, "data_dir": data_dir, "overrides": overrides}))
  source = dataset.source(split)
  examples = [source[i] for i in range(min(num, len(source)))]
  class_names = dataset.builder.info.metadata["class_names"]
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  return plots.synthetic_preview(examples, class_names, out)


def define_flags() -> None:
  """The command line's flags (module docstring); defined only when run, since the tests import this module."""
  flags.DEFINE_string("out", "runs/reports/synthetic_preview.png", "PNG to write (folder created)")
  flags.DEFINE_integer("num", 4, "examples to draw: the first NUM of the split")
  flags.DEFINE_enum("split", "train", ["train", "validation", "test"], "split to draw from")
  flags.DEFINE_enum("config", "res64", sorted(SyntheticScenes.builder_configs), "the dataset's builder config")
  flags.DEFINE_string("data_dir", None, "tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")


def main(argv: list[str]) -> None:
  script.start(argv)
  f = flags.FLAGS
  try:
    preview(f.out, f.num, f.split, f.config, f.data_dir)
  except ValueError as e:
    script.fail(e)
  print(f"wrote {f.out}")


if __name__ == "__main__":
  define_flags()
  script.run(main)
