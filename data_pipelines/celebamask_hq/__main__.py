"""Builds celebamask_hq: python -m data_pipelines.celebamask_hq --data_dir=DIR --manual_dir=DIR [--config=parts19]
[--resolution=256] [--split=official] [--max_examples=0]."""
import argparse

from data_pipelines import builders
from data_pipelines.celebamask_hq.builder import CelebAMaskHQ, CelebAMaskHQConfig, build


def main():
  """Parses the flags, builds the dataset if needed and prints where it is and its split sizes."""
  parser = argparse.ArgumentParser(prog="python -m data_pipelines.celebamask_hq", description=__doc__)
  parser.add_argument("--data_dir", default="~/tensorflow_datasets", help="tfds data directory")
  parser.add_argument("--manual_dir", help="the unzipped CelebAMask-HQ folder (needed until the dataset is built)")
  parser.add_argument("--config", default="parts19", choices=sorted(CelebAMaskHQ.builder_configs))
  defaults = CelebAMaskHQConfig(name="defaults")
  parser.add_argument("--resolution", type=int, default=defaults.resolution, help="side of images and label maps")
  parser.add_argument("--split", default=defaults.split, choices=("official", "random"))
  parser.add_argument("--fractions", type=float, nargs=3, default=defaults.fractions,
                      help="train, validation, test shares of the random split")
  parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the random split")
  parser.add_argument("--max_examples", type=int, default=defaults.max_examples,
                      help="keep the first N examples of each split (0: all)")
  args = parser.parse_args()
  args.fractions = tuple(args.fractions)
  # Only changed fields become overrides, so that the default build keeps the plain config name.
  overrides = {key: getattr(args, key) for key in ("resolution", "split", "fractions", "seed", "max_examples")
               if getattr(args, key) != getattr(defaults, key)}
  builders.run_build_command(parser, build, args.data_dir, args.config, args.manual_dir, **overrides)


if __name__ == "__main__":
  main()
