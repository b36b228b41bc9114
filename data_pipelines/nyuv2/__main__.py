"""Builds nyuv2: python -m data_pipelines.nyuv2 --data_dir=DIR --manual_dir=DIR [--config=nyud_mt]
[--resolution=HxW] [--validation_fraction=F] [--seed=S]."""
import argparse

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
  try:
    builder = build(args.data_dir, args.config, args.manual_dir, **overrides)
  except (FileNotFoundError, ValueError) as error:  # a broken download: the message names the file
    parser.exit(2, f"error: {error}\n")
  print(f"nyuv2/{builder.builder_config.name} is in {builder.data_dir}: "
        + ", ".join(f"{name} {split.num_examples}" for name, split in builder.info.splits.items()))


if __name__ == "__main__":
  main()
