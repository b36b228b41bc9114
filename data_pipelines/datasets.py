"""The datasets a config can name (`config.data.name`), opened as random-access tfds data sources.

A dataset entry turns `config.data` into a prepared tfds builder: the embedded `synthetic_scenes` is rendered on
first use; real datasets are built from the user's manual download. Its `info.metadata` names the classes and
attributes, which the task targets are matched against.
"""
import dataclasses
import os
from typing import Callable, Sequence

import ml_collections
import tensorflow_datasets as tfds

from data_pipelines import celebamask_hq, episodes, nyuv2, synthetic_scenes


def _synthetic_scenes(data_config: ml_collections.ConfigDict, data_dir: str) -> tfds.core.DatasetBuilder:
  return synthetic_scenes.build(data_dir, data_config.config, **dict(data_config.get("overrides") or {}))


def _from_download(build: Callable[..., tfds.core.DatasetBuilder]):
  """A DATASETS entry for a builder that reads the user's download from `config.data.manual_dir`."""
  return lambda data_config, data_dir: build(data_dir, data_config.config, data_config.get("manual_dir"),
                                             **dict(data_config.get("overrides") or {}))


DATASETS: dict[str, Callable[[ml_collections.ConfigDict, str], tfds.core.DatasetBuilder]] = {
    "synthetic_scenes": _synthetic_scenes,
    "celebamask_hq": _from_download(celebamask_hq.build),
    "nyuv2": _from_download(nyuv2.build),
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


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets (tfds' own default)."""
  return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared dataset: its builder, and the attribute names its examples' attribute vectors use."""
  builder: tfds.core.DatasetBuilder

  @property
  def attribute_names(self) -> tuple[str, ...]:
    return tuple(self.builder.info.metadata.get("attribute_names", ()))

  def source(self, split: str):
    """Random-access source of `split`: len() examples, source[i] a dict of numpy arrays."""
    if split not in self.builder.info.splits:
      raise ValueError(f"split {split!r} is not in dataset {self.builder.info.full_name} "
                       f"(splits: {sorted(self.builder.info.splits)})")
    return self.builder.as_data_source(split)

  def targets(self, task_configs, names: Sequence[str]) -> tuple[episodes.TargetSpec, ...]:
    """How each task in `names` reads its target from this dataset's examples (see episodes.target_specs)."""
    return episodes.target_specs(task_configs, names, self.attribute_names)


def open_dataset(data_config: ml_collections.ConfigDict) -> Dataset:
  """`config.data` → a prepared Dataset (building it first where the dataset can be built here)."""
  if data_config.name not in DATASETS:
    raise ValueError(f"config.data.name={data_config.name!r}; choose one of {sorted(DATASETS)}")
  data_dir = data_config.get("data_dir") or default_data_dir()
  return Dataset(DATASETS[data_config.name](data_config, data_dir))
