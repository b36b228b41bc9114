"""The datasets a config can name (`config.data.name`), opened as random-access tfds data sources.

A dataset entry turns `config.data` into a prepared tfds builder: the embedded `synthetic_scenes` is rendered on
first use; real datasets are built from the user's manual download. Its `info.metadata` names the classes and
attributes, which the task targets are matched against.
"""
import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import tensorflow_datasets as tfds

from data_pipelines import celebamask_hq, episodes, nyuv2, synthetic_scenes, transforms
from msp.train.config import ConfigError


def _synthetic_scenes(data_config: ml_collections.ConfigDict, data_dir: str) -> tfds.core.DatasetBuilder:
  return synthetic_scenes.build(data_dir, data_config.config, **dict(data_config.get("overrides") or {}))


def _from_download(build: Callable[..., tfds.core.DatasetBuilder]):
  """A DATASETS entry for a builder that reads the user's download from `config.data.manual_dir`."""
  return lambda data_config, data_dir: build(data_dir, data_config.config, data_config.get("manual_dir"),
                                             **dict(data_config.get("overrides") or {}))


def _prepared(data_config: ml_collections.ConfigDict, data_dir: str) -> tfds.core.DatasetBuilder:
  """A dataset that any tfds builder prepared (file_format array_record): `config.data.config` is its directory
  (DATA_DIR/name[/config]/version, read with no builder code), or `name[/config][:version]` of a builder in
  `data_dir`. ConfigError naming it when it is not there or not prepared in a format msp can read."""
  spec = data_config.config
  try:
    if os.path.isdir(spec):
      builder = tfds.builder_from_directory(spec)
    else:
      builder = tfds.builder(spec, data_dir=data_dir, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except  (tfds raises many kinds for a missing dataset)
    raise ConfigError(f"config.data.config={spec!r}: no prepared tfds dataset there or in {data_dir} "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from e
  if not builder.info.splits or "image" not in builder.info.features:
    raise ConfigError(f"config.data.config={spec!r}: the dataset has no splits or no 'image' feature; prepare it "
                      f"with builder.download_and_prepare(file_format='array_record')")
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise ConfigError(f"config.data.config={spec!r} is stored as {builder.info.file_format.value}; msp reads "
                      f"array_record (download_and_prepare(file_format='array_record'))")
  return builder


DATASETS: dict[str, Callable[[ml_collections.ConfigDict, str], tfds.core.DatasetBuilder]] = {
    "synthetic_scenes": _synthetic_scenes,
    "celebamask_hq": _from_download(celebamask_hq.build),
    "nyuv2": _from_download(nyuv2.build),
    "tfds": _prepared,  # any prepared tfds dataset, named by config.data.config
}


class Prefix:
  """The first `n` examples of a random-access source (n is capped at its length)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(n, len(source))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int):
    if not 0 <= i < self.n:
      raise IndexError(f"index {i} out of range for the first {self.n} examples")
    return self.source[i]


class Mapped:
  """A random-access source whose examples pass through `fn` (raw example → raw example) when read."""

  def __init__(self, source, fn: Callable[[dict], dict]):
    self.source, self.fn = source, fn

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int):
    return self.fn(self.source[i])

  def __getitems__(self, indices: Sequence[int]) -> list:
    getitems = getattr(self.source, "__getitems__", None)
    raw = getitems(indices) if getitems is not None else [self.source[i] for i in indices]
    return [self.fn(example) for example in raw]


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets (tfds' own default)."""
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared dataset: its builder, the attribute names its examples' attribute vectors use, and the square
  side (pixels) the model sees, `image_size` (None: the stored size)."""
  builder: tfds.core.DatasetBuilder
  image_size: int | None = None

  @property
  def attribute_names(self) -> tuple[str, ...]:
    return tuple(self.builder.info.metadata.get("attribute_names", ()))

  @property
  def stored_size(self) -> tuple[int | None, int | None]:
    """(H, W) of the stored images; None where examples differ."""
    return tuple(self.builder.info.features["image"].shape[:2])

  def source(self, split: str, fitted: bool = True):
    """Random-access source of `split`: len() examples, source[i] a dict of numpy arrays. With `fitted` and an
    image_size other than the stored size, examples are fit to image_size² (`transforms.fit`: the short side
    scaled to it, then a centre crop; invalid-aware for depth and normals)."""
    if split not in self.builder.info.splits:
      raise ValueError(f"split {split!r} is not in dataset {self.builder.info.full_name} "
                       f"(splits: {sorted(self.builder.info.splits)})")
    source = self.builder.as_data_source(split)
    if not fitted or self.image_size is None or self.stored_size == (self.image_size, self.image_size):
      return source
    return Mapped(source, functools.partial(transforms.fit, size=self.image_size))

  def augmentation(self, options: Mapping[str, Any] | None) -> episodes.Transform | None:
    """The training transform of `config.data.augment` (AugmentOptions fields but `size`, which is image_size,
    and `enabled`), for the unfitted source; None when disabled."""
    if options is None or not dict(options).get("enabled", True):
      return None
    if self.image_size is None:
      raise ValueError("augmentation needs the model's image size (open_dataset(..., image_size))")
    aug = transforms.AugmentOptions.from_config({**dict(options), "size": self.image_size})
    return functools.partial(transforms.augment, options=aug)

  def targets(self, task_configs, names: Sequence[str]) -> tuple[episodes.TargetSpec, ...]:
    """How each task in `names` reads its target from this dataset's examples (see episodes.target_specs);
    a segmentation task's num_classes must match the dataset's class_names (ConfigError otherwise)."""
    class_names = self.builder.info.metadata.get("class_names")
    for name in names:
      options = task_configs[name]
      if options.get("kind", name) == "segmentation" and class_names is not None and (
          options.get("num_classes") != len(class_names)):
        raise ConfigError(f"config.tasks.{name}.num_classes={options.get('num_classes')} but "
                         f"{self.builder.info.full_name} has {len(class_names)} classes")
    return episodes.target_specs(task_configs, names, self.attribute_names)


def open_dataset(data_config: ml_collections.ConfigDict, image_size: int | None = None) -> Dataset:
  """`config.data` → a prepared Dataset (building it first where the dataset can be built here) whose sources give
  examples of `image_size`² (None: as stored)."""
  if data_config.name not in DATASETS:
    raise ValueError(f"config.data.name={data_config.name!r}; choose one of {sorted(DATASETS)}")
  data_dir = data_config.get("data_dir") or default_data_dir()
  return Dataset(DATASETS[data_config.name](data_config, data_dir), image_size)
