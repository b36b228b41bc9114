"""Builds nyuv2: python -m data_pipelines.nyuv2 --data_dir=DIR --manual_dir=DIR [--config=nyud_mt]
[--resolution=HxW] [--validation_fraction=F] [--seed=S]."""
import argparse

from data_pipelines import builders
from data_pipelines.nyuv2.builder import NyuV2, build


def _resolution(text: str) -> tuple[int, int]:
  height, width = text.lower().split("x")
  return int(height), int(width)


def main():
  """Parses the flags, builds the dataset if needed and prints where it is."""
  parser = argparse.ArgumentParser(prog="python -m data_pipelines.nyuv2", description=__doc__)
  parser.add_argument("--data_dir", default="~/tensorflow_datasets", help="tfds data directory")
  parser.add_argument("--manual_dir", required=True, help="directory holding the manual download")
  parser.add_argument("--config", default="nyud_mt", choices=sorted(NyuV2.builder_configs))
  parser.add_argument("--resolution", type=_resolution, help="stored HxW, e.g. 240x320 (default: the download's)")
  parser.add_argument("--validation_fraction", type=float, help="share of the training images held out (0.1)")
  parser.add_argument("--seed", type=int, help="picks the validation images (0)")
  args = parser.parse_args()
  overrides = {key: getattr(args, key) for key in ("resolution", "validation_fraction", "seed")
               if getattr(args, key) is not None}
  builders.run_build_command(parser, build, args.data_dir, args.config, args.manual_dir, **overrides)


if __name__ == "__main__":
  main()
