"""tfds builder `nyuv2`: NYU Depth v2 (795 train / 654 test indoor images) for multi-task learning, built from a
user's manual download in one of three layouts (see MANUAL_DOWNLOAD_INSTRUCTIONS and layouts.py).

Builds without TensorFlow to array_record files, read with `builder.as_data_source(split)` (numpy examples):

  python -m data_pipelines.nyuv2 --data_dir=~/tensorflow_datasets --manual_dir=DIR --config=nyud_mt

or `build(data_dir, config, manual_dir)` from Python. Configs (one per layout): nyud_mt (40 classes), mtan
(13 classes), official40, official13 (the labeled .mat with a 40- or 13-class mapping).

Features (the shared layout of data_pipelines/episodes.py): image uint8 (H, W, 3), PNG; segmentation uint8 (H, W),
classes 0..C-1 named by metadata["class_names"], 255 = void; depth float32 (H, W) metres, 0 = invalid; normals
float32 (H, W, 3) unit, camera frame, zero = invalid; edges uint8 (H, W) {0, 1}. Maps a layout lacks are derived
(maps.py): mtan has no edges (derived from label boundaries and depth discontinuities); the official .mat has no
normals (derived from depth with the NYU Kinect intrinsics) and no edges (derived as for mtan). Stored normals keep
their download's axis convention; derived ones use x right, y down, z forward, facing the camera. (H, W) is the
config's `resolution`, or the download's own size (480 x 640 for nyud_mt and official, 288 x 384 for mtan) when it
is None; resizing rules are in maps.py.

Splits: test = the official 654 test images, in the download's order; validation = round(validation_fraction * 795)
images of the official training set, the ones with the smallest sha256 of "<seed>/<id>" (so the choice depends only
on the seed and the image ids); train = the rest of the official training set, in the download's order. Example i
of a split is at index i of its data source; metadata["split_ids"][split][i] is its id in the download (file stem
for nyud_mt and mtan, 1-based index into the .mat for official*).

An interrupted build leaves no prepared dataset: tfds writes into a temporary directory and renames it at the end,
so `is_prepared()` stays False and the next build starts afresh.
"""
import dataclasses
import hashlib
import io

import numpy as np
from etils import epath
import tensorflow_datasets as tfds
from PIL import Image

from data_pipelines import builders
from data_pipelines.nyuv2 import layouts, maps

LAYOUTS = {
    "nyud_mt": (layouts.read_nyud_mt, layouts.NYU40_CLASS_NAMES),
    "mtan": (layouts.read_mtan, layouts.NYU13_CLASS_NAMES),
    "official40": (lambda manual_dir: layouts.read_official(manual_dir, 40), layouts.NYU40_CLASS_NAMES),
    "official13": (lambda manual_dir: layouts.read_official(manual_dir, 13), layouts.NYU13_CLASS_NAMES),
}


@dataclasses.dataclass(eq=False, kw_only=True)
class NyuV2Config(tfds.core.BuilderConfig):
  """layout: one of LAYOUTS, the manual download's format. resolution: stored (H, W) in pixels, None = the
  download's own. validation_fraction: the share of the official training images held out as `validation` (0: no
  validation split). seed: picks the validation images."""
  layout: str
  resolution: tuple[int, int] | None = None
  validation_fraction: float = 0.1
  seed: int = 0


_CONFIG_DESCRIPTIONS = {
    "nyud_mt": "NYUD_MT (astmt): manual_dir holds NYUD_MT/ or its contents; 40 classes; all maps as downloaded.",
    "mtan": "MTAN/LibMTL nyuv2 (288x384): manual_dir holds nyuv2/ or train/ and val/; 13 classes; edges derived.",
    "official40": "nyu_depth_v2_labeled.mat + splits.mat + class_mapping_40.npy|.txt (or classMapping40.mat); "
                  "40 classes; normals and edges derived.",
    "official13": "nyu_depth_v2_labeled.mat + splits.mat + class_mapping_13.npy|.txt (or classMapping40.mat and "
                  "class13Mapping.mat); 13 classes; normals and edges derived.",
}


class NyuV2(tfds.core.GeneratorBasedBuilder):
  """NYU Depth v2 with segmentation, depth, normals and edges, from a manual download."""

  name = "nyuv2"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [NyuV2Config(name=name, layout=name, description=text)
                     for name, text in _CONFIG_DESCRIPTIONS.items()]
  DEFAULT_CONFIG_NAME = "nyud_mt"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put one NYU-v2 download into manual_dir and build the config named after its layout.
  nyud_mt: {layouts.NYUD_MT_SOURCE}.
    manual_dir holds NYUD_MT/ or its contents: images/, segmentation/, depth/, normals/, edge/, gt_sets/.
  mtan: {layouts.MTAN_SOURCE}.
    manual_dir holds nyuv2/ or its contents: train/ and val/, each with image/, label/, depth/, normal/.
  official40, official13: {layouts.OFFICIAL_SOURCE}.
    manual_dir holds nyu_depth_v2_labeled.mat, splits.mat and {layouts.MAPPING_SOURCE.format(
        C="<C>", n=layouts.NUM_RAW_LABELS, mats="classMapping40.mat, and class13Mapping.mat for 13 classes")}.
  """
  # tfds 4.9.10 derives code_path through `importlib_resources`, which etils 1.15 no longer installs; this is the
  # value it would derive.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    if config.layout not in LAYOUTS:
      raise ValueError(f"nyuv2 config {config.name!r}: layout {config.layout!r} is not one of {sorted(LAYOUTS)}")
    if config.resolution is not None and (len(config.resolution) != 2 or not all(
        isinstance(n, int) and n > 0 for n in config.resolution)):
      raise ValueError(f"nyuv2 config {config.name!r}: resolution must be None or (H, W) positive ints, got "
                       f"{config.resolution}")
    if not 0 <= config.validation_fraction < 1:
      raise ValueError(f"nyuv2 config {config.name!r}: validation_fraction must lie in [0, 1), got "
                       f"{config.validation_fraction}")
    shape = tuple(config.resolution) if config.resolution else (None, None)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(builders.image_and_maps(shape)),
        metadata=tfds.core.MetadataDict(class_names=LAYOUTS[config.layout][1]),
        homepage="https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html",
        disable_shuffling=True,  # keeps example i of a split at index i of its data source
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as error:  # tfds: manual_dir unset, missing or empty
      raise FileNotFoundError(str(error)) from error
    official = LAYOUTS[config.layout][0](manual_dir)
    validation_ids = _validation_ids([example.id for example in official["train"]], config.validation_fraction,
                                     config.seed)
    splits = {
        "train": [example for example in official["train"] if example.id not in validation_ids],
        "validation": [example for example in official["train"] if example.id in validation_ids],
        "test": official["test"],
    }
    splits = {name: examples for name, examples in splits.items() if examples}  # tfds refuses empty splits
    self.info.metadata["split_ids"] = {name: [example.id for example in examples]
                                       for name, examples in splits.items()}
    return {name: self._generate_examples(examples) for name, examples in splits.items()}

  def _generate_examples(self, examples: list[layouts.Example]):
    for i, example in enumerate(examples):
      yield i, _finish(example.load(), self.builder_config.resolution)


def _validation_ids(ids: list[str], fraction: float, seed: int) -> set[str]:
  """The round(fraction * len(ids)) ids with the smallest sha256("<seed>/<id>")."""
  count = round(fraction * len(ids))
  if count >= len(ids):
    raise ValueError(f"validation_fraction={fraction} would hold out all {len(ids)} training images")
  return set(sorted(ids, key=lambda id_: hashlib.sha256(f"{seed}/{id_}".encode()).digest())[:count])


def _finish(example: dict[str, np.ndarray], resolution: tuple[int, int] | None) -> dict:
  """A layout's example → the stored features: resized to `resolution`, missing maps derived, image PNG bytes."""
  if resolution and tuple(resolution) != example["image"].shape[:2]:
    resize = {"image": maps.resize_image, "segmentation": maps.resize_labels, "depth": maps.resize_depth,
              "normals": maps.resize_normals, "edges": maps.resize_edges}
    example = {name: resize[name](value, tuple(resolution)) for name, value in example.items()}
  if "normals" not in example:
    example["normals"] = maps.normals_from_depth(example["depth"])
  if "edges" not in example:
    example["edges"] = maps.edges_from_labels_and_depth(example["segmentation"], example["depth"])
  png = io.BytesIO()
  Image.fromarray(example["image"]).save(png, format="PNG")
  return {**example, "image": png.getvalue()}


def build(data_dir: str, config: str | NyuV2Config, manual_dir: str | None = None, **overrides) -> NyuV2:
  """Returns the builder of `config` in `data_dir`, generating its array_record files from `manual_dir` if needed.

  config: nyud_mt, mtan, official40, official13 or a custom NyuV2Config; manual_dir: the folder holding the download
  (see NyuV2.MANUAL_DOWNLOAD_INSTRUCTIONS), read only when the dataset is not prepared yet; overrides: NyuV2Config
  fields (e.g. resolution=(240, 320)), appended to the config name (nyud_mt_resolution240x320). See
  `builders.prepare`.
  """
  return builders.prepare(NyuV2, data_dir, config, manual_dir, **overrides)
