"""What msp's tfds builders share: the map features of the common example layout, and preparing a named config.

The layout (data_pipelines/episodes.py): image uint8 (H, W, 3), PNG; segmentation uint8 (H, W), 255 = void;
depth float32 (H, W) metres, 0 = invalid; normals float32 (H, W, 3) unit, camera frame, zero = invalid; edges
uint8 (H, W) {0, 1}.
"""
import dataclasses
import os
from typing import Callable, Sequence, TypeVar

import numpy as np
import tensorflow_datasets as tfds

from msp import cli
from msp.parallel import is_primary, sync

MAPS = ("segmentation", "depth", "normals", "edges")
_MAP_FEATURES = {
    "segmentation": lambda shape: tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="zlib"),
    "depth": lambda shape: tfds.features.Tensor(shape=shape, dtype=np.float32, encoding="zlib"),
    "normals": lambda shape: tfds.features.Tensor(shape=shape + (3,), dtype=np.float32, encoding="zlib"),
    "edges": lambda shape: tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="zlib"),
}

Builder = TypeVar("Builder", bound=tfds.core.DatasetBuilder)


def image_and_maps(shape: tuple[int | None, int | None], maps: Sequence[str] = MAPS) -> dict:
  """tfds features of the common layout at (H, W) = `shape` (None: any size): the PNG image and `maps`."""
  return {"image": tfds.features.Image(shape=tuple(shape) + (3,), dtype=np.uint8, encoding_format="png"),
          **{name: _MAP_FEATURES[name](tuple(shape)) for name in maps}}


def _name_part(value) -> str:
  return "x".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def prepare(builder_class: type[Builder], data_dir: str, config, manual_dir: str | None = None,
            **overrides) -> Builder:
  """Returns the builder of `config` in `data_dir`, generating its array_record files first if needed.

  A failed or interrupted build leaves no prepared dataset: tfds writes into a temporary `incomplete.*` directory
  and renames it only at the end. In a multi-process job process 0 builds first and the others wait for it: on a
  shared `data_dir` they find the dataset prepared, on a directory of their own host they build their own copy.

  Args:
    builder_class: a tfds GeneratorBasedBuilder with BUILDER_CONFIGS.
    data_dir: tfds data directory (`~` is expanded); files go to DATA_DIR/<name>/<config>/<version>.
    config: the name of one of the builder's configs, or a config object.
    manual_dir: the user's download (builders with MANUAL_DOWNLOAD_INSTRUCTIONS); read only when the dataset is
      not prepared yet; `~` is expanded.
    **overrides: config fields replacing the named config's (e.g. resolution=128); the config name gets them
      appended (parts19_resolution128) so that different variants never share a directory.
  """
  if isinstance(config, str):
    if config not in builder_class.builder_configs:
      raise ValueError(f"{builder_class.name} has no config {config!r}; choose one of "
                       f"{sorted(builder_class.builder_configs)}")
    config = builder_class.builder_configs[config]
  if overrides:
    suffix = "".join(f"_{key}{_name_part(value)}" for key, value in sorted(overrides.items()))
    config = dataclasses.replace(config, name=config.name + suffix, **overrides)
  data_dir = os.path.expanduser(data_dir)
  if os.path.lexists(data_dir) and not os.path.isdir(data_dir):
    raise ValueError(f"the data directory {data_dir} is not a directory")
  prepared = f"prepare {builder_class.name}/{config.name}"  # the barrier after process 0's build
  if not is_primary():
    sync(prepared)
  builder = builder_class(data_dir=data_dir, config=config, file_format="array_record")
  try:
    if not builder.is_prepared():
      try:
        _build(builder, builder_class, config, data_dir, manual_dir)
      except Exception:
        # Another process (a sweep's other slice) may have finished the same build first: tfds then cannot rename
        # its own copy into place, and the dataset is there.
        builder = builder_class(data_dir=data_dir, config=config, file_format="array_record")
        if not builder.is_prepared():
          raise
  finally:
    if is_primary():
      sync(prepared)
  return builder


def _build(builder: Builder, builder_class: type[Builder], config, data_dir: str, manual_dir: str | None) -> None:
  """Generates the array_record files of `builder` in `data_dir`, reading the user's download `manual_dir` where
  the dataset needs one."""
  instructions = getattr(builder_class, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  download_config = None
  if instructions:
    if manual_dir is None:
      raise ValueError(f"{builder_class.name}/{config.name} is not built in {data_dir}: pass the folder of your "
                       f"download as manual_dir (--config.data.manual_dir in experiments).\n{instructions}")
    manual_dir = os.path.expanduser(manual_dir)
    if not os.path.isdir(manual_dir):
      raise FileNotFoundError(f"{builder_class.name}: manual_dir {manual_dir} is not a directory.\n{instructions}")
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(file_format="array_record", download_config=download_config)


def run_build_command(build: Callable[..., Builder], *args, **overrides) -> None:
  """The end of a `python -m data_pipelines.<dataset>` command: builds, then prints where the dataset is and its
  split sizes; a broken download (ValueError naming the file) or an unusable directory (OSError: not a
  directory, no permission, a full disk) ends the command with that one line and exit status 2."""
  try:
    builder = build(*args, **overrides)
  except (OSError, ValueError) as error:
    cli.fail(error)
  print(f"{builder.name}/{builder.builder_config.name} is in {builder.data_dir}: "
        + ", ".join(f"{name} {split.num_examples}" for name, split in builder.info.splits.items()))
