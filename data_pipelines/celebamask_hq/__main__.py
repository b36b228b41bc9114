"""Builds celebamask_hq: python -m data_pipelines.celebamask_hq --data_dir=DIR --manual_dir=DIR [--config=parts19]
[--resolution=256] [--split=official] [--fractions=0.8,0.1,0.1] [--seed=0] [--max_examples=0]."""
from absl import flags

from data_pipelines import builders
from data_pipelines.celebamask_hq.builder import CelebAMaskHQ, CelebAMaskHQConfig, build
from msp import cli


class _FractionsParser(flags.ArgumentParser):
  """`a,b,c` → (a, b, c), three floats."""

  def parse(self, argument):
    values = argument.split(",") if isinstance(argument, str) else argument
    try:
      values = tuple(float(v) for v in values)
    except ValueError:
      values = ()
    if len(values) != 3:
      raise ValueError(f"expected three comma-separated numbers (train,validation,test), got {argument!r}")
    return values

  def flag_type(self):
    return "three floats"


_DEFAULTS = CelebAMaskHQConfig(name="defaults")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "tfds data directory")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None,
                                  "the unzipped CelebAMask-HQ folder (needed until the dataset is built)")
_CONFIG = flags.DEFINE_enum("config", "parts19", sorted(CelebAMaskHQ.builder_configs), "the builder config")
_OVERRIDES = (
    flags.DEFINE_integer("resolution", _DEFAULTS.resolution, "side of images and label maps"),
    flags.DEFINE_enum("split", _DEFAULTS.split, ["official", "random"], "official or random split"),
    flags.DEFINE(_FractionsParser(), "fractions", _DEFAULTS.fractions,
                 "train, validation, test shares of the random split", serializer=flags.CsvListSerializer(",")),
    flags.DEFINE_integer("seed", _DEFAULTS.seed, "seed of the random split"),
    flags.DEFINE_integer("max_examples", _DEFAULTS.max_examples, "keep the first N examples of each split (0: all)"),
)


def main(argv):
  """Builds the dataset if needed and prints where it is and its split sizes."""
  cli.start(argv)
  # Only changed fields become overrides, so that the default build keeps the plain config name.
  overrides = {flag.name: flag.value for flag in _OVERRIDES if flag.value != getattr(_DEFAULTS, flag.name)}
  builders.run_build_command(build, _DATA_DIR.value, _CONFIG.value, _MANUAL_DIR.value, **overrides)


if __name__ == "__main__":
  cli.run(main)
