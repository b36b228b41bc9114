"""Builds synthetic_scenes: python -m data_pipelines.synthetic_scenes --data_dir=DIR [--config=res64]."""
from absl import flags

from data_pipelines import builders
from data_pipelines.synthetic_scenes.builder import SyntheticScenes, build
from msp import cli

_DATA_DIR = flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "tfds data directory")
_CONFIG = flags.DEFINE_enum("config", "res64", sorted(SyntheticScenes.builder_configs), "the builder config")


def main(argv):
  """Builds the dataset if needed and prints where it is."""
  cli.start(argv)
  builders.run_build_command(build, _DATA_DIR.value, _CONFIG.value)


if __name__ == "__main__":
  cli.run(main)
