"""Draws the first examples of a synthetic_scenes split with their ground truth (experiments.plots.synthetic_preview).

python experiments/synthetic_preview.py --out=runs/reports/synthetic_preview.png [--num=4] [--split=train]
    [--config=res64] [--data_dir=DIR]

The dataset is opened as training does (`data_pipelines.datasets.open_dataset`): from --data_dir, else $TFDS_DATA_DIR,
else ~/tensorflow_datasets, rendered there first if it is not built yet. Only --out is written.
"""
import argparse
import os

import ml_collections

from data_pipelines import datasets
from data_pipelines.synthetic_scenes.builder import SyntheticScenes
from experiments import plots


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


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); argparse like the dataset's build command, so importing this module
  defines no global flags."""
  parser = argparse.ArgumentParser(prog="python experiments/synthetic_preview.py",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="runs/reports/synthetic_preview.png", help="PNG to write (folder created)")
  parser.add_argument("--num", type=int, default=4, help="examples to draw: the first NUM of the split")
  parser.add_argument("--split", default="train", choices=["train", "validation", "test"])
  parser.add_argument("--config", default="res64", choices=sorted(SyntheticScenes.builder_configs))
  parser.add_argument("--data_dir", default=None, help="tfds data directory (default: $TFDS_DATA_DIR or "
                      "~/tensorflow_datasets)")
  args = parser.parse_args(argv)
  try:
    preview(args.out, args.num, args.split, args.config, args.data_dir)
  except ValueError as e:
    parser.error(str(e))  # one line on stderr, exit status 2
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
