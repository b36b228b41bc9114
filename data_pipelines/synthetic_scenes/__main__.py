"""Builds synthetic_scenes: python -m data_pipelines.synthetic_scenes --data_dir=DIR [--config=res64]."""
import argparse

from data_pipelines import builders
from data_pipelines.synthetic_scenes.builder import SyntheticScenes, build


def main():
  """Parses --data_dir and --config, builds the dataset if needed and prints where it is."""
  parser = argparse.ArgumentParser(prog="python -m data_pipelines.synthetic_scenes", description=__doc__)
  parser.add_argument("--data_dir", default="~/tensorflow_datasets", help="tfds data directory")
  parser.add_argument("--config", default="res64", choices=sorted(SyntheticScenes.builder_configs))
  args = parser.parse_args()
  builders.run_build_command(parser, build, args.data_dir, args.config)


if __name__ == "__main__":
  main()
