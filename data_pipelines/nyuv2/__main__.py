"""Builds nyuv2: python -m data_pipelines.nyuv2 --data_dir=DIR --manual_dir=DIR [--config=nyud_mt]
[--resolution=HxW] [--validation_fraction=F] [--seed=S]."""
from absl import flags

from data_pipelines import builders
from data_pipelines.nyuv2.builder import NyuV2, build
from msp import cli


class _ResolutionParser(flags.ArgumentParser):
  """`HxW` → (H, W)."""

  def parse(self, argument):
    if isinstance(argument, tuple) or argument is None:
      return argument
    try:
      height, width = argument.lower().split("x")
      return int(height), int(width)
    except ValueError:
      raise ValueError(f"expected HxW, e.g. 240x320, got {argument!r}") from None

  def flag_type(self):
    return "HxW"


_DATA_DIR = flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "tfds data directory")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "directory holding the manual download")
_CONFIG = flags.DEFINE_enum("config", "nyud_mt", sorted(NyuV2.builder_configs), "the builder config")
_RESOLUTION = flags.DEFINE(_ResolutionParser(), "resolution", None,
                           "stored HxW, e.g. 240x320 (default: the download's)")
_VALIDATION_FRACTION = flags.DEFINE_float("validation_fraction", None,
                                          "share of the training images held out (0.1)")
_SEED = flags.DEFINE_integer("seed", None, "picks the validation images (0)")


def main(argv):
  """Builds the dataset if needed and prints where it is."""
  cli.start(argv)
  overrides = {flag.name: flag.value for flag in (_RESOLUTION, _VALIDATION_FRACTION, _SEED) if flag.value is not None}
  builders.run_build_command(build, _DATA_DIR.value, _CONFIG.value, _MANUAL_DIR.value, **overrides)


if __name__ == "__main__":
  flags.mark_flag_as_required("manual_dir")
  cli.run(main)
