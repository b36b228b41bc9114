"""Readers of the on-disk NYU-v2 layouts a user may have downloaded into the builder's manual_dir.

A reader lists the official splits ("train": the 795 training images, "test": the 654 test images, in the order
the download lists them) as `Example`s, after checking that every file they need exists, so that a missing file
fails before anything is written. `Example.load()` reads one example, checks it and converts it to the shared
layout: image uint8 (H, W, 3); segmentation uint8 (H, W), classes 0..C-1, 255 = void; depth float32 (H, W) metres,
0 = invalid (also where the file holds NaN or a value <= 0); and where the layout has them, normals float32
(H, W, 3) unit or zero (= invalid; decoded vectors shorter than maps.MIN_NORM are invalid, others renormalised)
and edges uint8 (H, W) {0, 1}.

Errors name the file: FileNotFoundError for a missing file or folder (with where the layout comes from),
ValueError for an unreadable or corrupt file, unexpected values, or a shape that differs from the image's.
"""
import dataclasses
import functools
from typing import Callable

import h5py
import numpy as np
import scipy.io
from etils import epath
from PIL import Image

from data_pipelines.nyuv2 import maps

NYU40_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor_mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower_curtain", "box", "whiteboard",
    "person", "night_stand", "toilet", "sink", "lamp", "bathtub", "bag", "other_structure", "other_furniture",
    "other_prop")
# Couprie et al. 2013's 13 classes, in the order of class13Mapping.mat and of MTAN's labels 0..12.
NYU13_CLASS_NAMES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
                     "table", "tv", "wall", "window")
NUM_RAW_LABELS = 895  # the labeled .mat's labels: 0 = unlabelled, 1..894 object names

NYUD_MT_SOURCE = ("NYUD_MT of astmt (https://github.com/facebookresearch/astmt): "
                  "https://data.vision.ee.ethz.ch/kmaninis/share/MTL/NYUD_MT.tgz, extracted")
MTAN_SOURCE = ("MTAN's preprocessed nyuv2, also used by LibMTL (https://github.com/lorenmt/mtan): "
               "https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=0, extracted")
OFFICIAL_SOURCE = ("the official NYU Depth v2 labeled dataset "
                   "(https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html): nyu_depth_v2_labeled.mat, and splits.mat "
                   "(http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat)")
MAPPING_SOURCE = ("a class mapping: class_mapping_{C}.npy or .txt, {n} integers, entry r = the class (1..{C}, "
                  "0 = void) of raw label r; or the NYU toolbox files from "
                  "https://github.com/ankurhanda/nyuv2-meta-data: {mats}")
MAPPING_MATS = {40: ("classMapping40.mat",), 13: ("classMapping40.mat", "class13Mapping.mat")}

# NYUD_MT folder → (extension of the usual variant, extension of the astmt file-type variant).
NYUD_MT_VARIANTS = {"segmentation": (".png", ".mat"), "depth": (".npy", ".mat"), "normals": (".npy", ".jpg"),
                    "edge": (".npy", ".png")}


@dataclasses.dataclass(frozen=True)
class Example:
  """One example of a download: `id` names it in its layout (file stem or 1-based index); `load()` returns its
  maps in the shared layout (see the module docstring)."""
  id: str
  load: Callable[[], dict[str, np.ndarray]]


def _missing(path: epath.Path, source: str) -> FileNotFoundError:
  return FileNotFoundError(f"{path} not found; it comes from {source}")


def _root(manual_dir: epath.Path, folder: str, marker: str, source: str) -> epath.Path:
  """manual_dir/folder when the download was extracted as that folder, else manual_dir; must hold `marker`."""
  root = manual_dir / folder if (manual_dir / folder).is_dir() else manual_dir
  if not (root / marker).exists():
    raise _missing(root / marker, f"{source} (into manual_dir or manual_dir/{folder})")
  return root


def _read(path: epath.Path, mat_key: str | None = None) -> np.ndarray:
  """The array in a .npy, .mat (under `mat_key`) or image file; ValueError naming the file if unreadable."""
  try:
    if path.suffix == ".npy":
      return np.load(path, allow_pickle=False)
    if path.suffix == ".mat":
      return scipy.io.loadmat(path)[mat_key]
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB") if path.suffix == ".jpg" else image)
  except Exception as error:  # numpy, scipy and PIL raise many types for a corrupt file
    raise ValueError(f"cannot read {path}: {type(error).__name__}: {error}") from error


def _check_shape(array: np.ndarray, shape: tuple[int, ...], path, image_path) -> np.ndarray:
  if array.shape != shape:
    raise ValueError(f"{path} has shape {array.shape}, expected {shape} to match {image_path}")
  return array


def _labels(raw: np.ndarray, first_class: int, num_classes: int, path) -> np.ndarray:
  """Raw labels first_class..first_class+C-1 (first_class - 1 = void) → uint8 0..C-1, 255 = void."""
  values = np.asarray(raw, np.float64) - first_class
  ok = (values == np.round(values)) & (values >= -1) & (values < num_classes)
  if not np.all(ok):
    bad = np.unique(raw[~ok])
    raise ValueError(f"{path}: labels must be integers in {first_class - 1}..{first_class + num_classes - 1} "
                     f"({first_class - 1} = void), found {bad[:5].tolist()}")
  return np.where(values < 0, 255, values).astype(np.uint8)


def _depth(raw: np.ndarray) -> np.ndarray:
  depth = np.asarray(raw, np.float32)
  return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)


def _edges(raw: np.ndarray, path) -> np.ndarray:
  """{0, 1} as stored, or a uint8 image (astmt's edge PNGs hold {0, 255}) thresholded at 128 → uint8 {0, 1}."""
  values = np.unique(raw)
  if np.all(np.isin(values, (0, 1))):
    return np.asarray(raw, np.uint8)
  if raw.dtype == np.uint8:
    return (raw >= 128).astype(np.uint8)
  raise ValueError(f"{path}: edges must be 0/1 (or a 0..255 image), found values {values[:5].tolist()}")


# NYUD_MT -----------------------------------------------------------------------------------------------------


def _variant(folder: epath.Path, extensions: tuple[str, str]) -> str:
  if not folder.is_dir():
    raise _missing(folder, NYUD_MT_SOURCE)
  found = {path.suffix for path in folder.iterdir()}
  for extension in extensions:
    if extension in found:
      return extension
  raise FileNotFoundError(f"{folder} holds neither *{extensions[0]} nor *{extensions[1]} files; it comes from "
                          f"{NYUD_MT_SOURCE}")


def _load_nyud_mt(paths: dict[str, epath.Path]) -> dict[str, np.ndarray]:
  image = _read(paths["image"])
  shape = image.shape[:2]

  def read(folder, mat_key=None):
    return _check_shape(_read(paths[folder], mat_key), shape + ((3,) if folder == "normals" else ()),
                        paths[folder], paths["image"])

  normals = read("normals")
  if paths["normals"].suffix == ".jpg":  # astmt stores (n + 1) / 2 * 255
    normals = normals.astype(np.float64) / 255 * 2 - 1
  return {
      "image": image,
      "segmentation": _labels(read("segmentation", "segmentation"), 1, 40, paths["segmentation"]),
      "depth": _depth(read("depth", "depth")),
      "normals": maps.unit_normals(normals),
      "edges": _edges(read("edge"), paths["edge"]),
  }


def read_nyud_mt(manual_dir: epath.Path) -> dict[str, list[Example]]:
  """NYUD_MT: images/<id>.jpg, segmentation/<id>.png (0 void, 1..40), depth/<id>.npy, normals/<id>.npy,
  edge/<id>.npy, gt_sets/{train,val}.txt; or the variant with depth/<id>.mat (key depth), segmentation/<id>.mat
  (key segmentation), normals/<id>.jpg ((n + 1) / 2 * 255), edge/<id>.png, detected per folder. val = test."""
  root = _root(manual_dir, "NYUD_MT", "gt_sets", NYUD_MT_SOURCE)
  extensions = {folder: _variant(root / folder, options) for folder, options in NYUD_MT_VARIANTS.items()}
  splits = {}
  for split, listing in (("train", "train.txt"), ("test", "val.txt")):
    if not (root / "gt_sets" / listing).exists():
      raise _missing(root / "gt_sets" / listing, NYUD_MT_SOURCE)
    ids = [line.strip() for line in (root / "gt_sets" / listing).read_text().splitlines() if line.strip()]
    examples = []
    for id_ in ids:
      paths = {"image": root / "images" / f"{id_}.jpg",
               **{folder: root / folder / f"{id_}{extension}" for folder, extension in extensions.items()}}
      for path in paths.values():
        if not path.exists():
          raise FileNotFoundError(f"{path} not found, but {root / 'gt_sets' / listing} lists {id_!r}")
      examples.append(Example(id_, functools.partial(_load_nyud_mt, paths)))
    splits[split] = examples
  return splits


# MTAN --------------------------------------------------------------------------------------------------------


def _load_mtan(paths: dict[str, epath.Path]) -> dict[str, np.ndarray]:
  image = _read(paths["image"])
  if image.ndim != 3 or image.shape[-1] != 3 or not np.all((image >= 0) & (image <= 1)):
    raise ValueError(f"{paths['image']}: expected a float (H, W, 3) image in [0, 1], got {image.dtype} "
                     f"{image.shape} in [{np.min(image)}, {np.max(image)}]")
  shape = image.shape[:2]
  depth = _read(paths["depth"])
  return {
      "image": np.round(image.astype(np.float64) * 255).astype(np.uint8),
      "segmentation": _labels(_check_shape(_read(paths["label"]), shape, paths["label"], paths["image"]), 0, 13,
                              paths["label"]),
      "depth": _depth(_check_shape(depth[..., 0] if depth.ndim == 3 else depth, shape, paths["depth"],
                                   paths["image"])),
      "normals": maps.unit_normals(_check_shape(_read(paths["normal"]), shape + (3,), paths["normal"],
                                                paths["image"])),
  }


def read_mtan(manual_dir: epath.Path) -> dict[str, list[Example]]:
  """MTAN: {train,val}/{image,label,depth,normal}/<i>.npy, i = 0..N-1; image float [0, 1] (H, W, 3), label float
  (H, W) 0..12 (-1 = void), depth (H, W, 1), normal (H, W, 3) in [-1, 1]. val = test."""
  root = _root(manual_dir, "nyuv2", "train", MTAN_SOURCE)
  splits = {}
  for split, folder in (("train", "train"), ("test", "val")):
    stems = {}
    for kind in ("image", "label", "depth", "normal"):
      directory = root / folder / kind
      if not directory.is_dir():
        raise _missing(directory, MTAN_SOURCE)
      stems[kind] = {path.stem for path in directory.glob("*.npy")}
    if not stems["image"]:
      raise FileNotFoundError(f"{root / folder / 'image'} holds no <i>.npy files; it comes from {MTAN_SOURCE}")
    for kind, found in stems.items():
      if missing := sorted(stems["image"] - found):
        raise FileNotFoundError(f"{root / folder / kind / (missing[0] + '.npy')} not found, but "
                                f"{root / folder / 'image' / (missing[0] + '.npy')} exists")
      if extra := sorted(found - stems["image"]):
        raise ValueError(f"{root / folder / kind / (extra[0] + '.npy')} has no image "
                         f"{root / folder / 'image' / (extra[0] + '.npy')}")
    if not all(stem.isdigit() for stem in stems["image"]):
      raise ValueError(f"{root / folder / 'image'}: file names must be <i>.npy, found "
                       f"{sorted(stem for stem in stems['image'] if not stem.isdigit())[:3]}")
    splits[split] = [
        Example(stem, functools.partial(_load_mtan, {kind: root / folder / kind / f"{stem}.npy" for kind in stems}))
        for stem in sorted(stems["image"], key=int)]
  return splits


# Official labeled .mat ---------------------------------------------------------------------------------------


def _mapping_values(values, path, num_classes: int) -> np.ndarray:
  values = np.asarray(values).ravel()
  if (values.shape != (NUM_RAW_LABELS,) or not np.all(values == np.round(values))
      or not np.all((values >= 0) & (values <= num_classes))):
    raise ValueError(f"{path}: a class mapping must hold {NUM_RAW_LABELS} integers in 0..{num_classes} (entry r: "
                     f"the class of raw label r, 0 = void), got {values.shape[0]} values in "
                     f"[{values.min(initial=0)}, {values.max(initial=0)}]")
  return values.astype(np.int64)


def _mat_field(path: epath.Path, key: str, field: str | None = None) -> np.ndarray:
  """`key` (or its struct's `field`) of a MATLAB v5 file, 1-D; ValueError naming the file if absent."""
  try:
    value = scipy.io.loadmat(path)[key]
    return np.asarray(value[field][0, 0] if field else value).ravel()
  except Exception as error:
    raise ValueError(f"cannot read {key}{'.' + field if field else ''} from {path}: "
                     f"{type(error).__name__}: {error}") from error


def class_mapping(manual_dir: epath.Path, num_classes: int) -> np.ndarray:
  """int64 (895,): entry r = the class (1..C, 0 = void) of the labeled .mat's raw label r.

  Read from manual_dir/class_mapping_C.npy or .txt (895 integers, whitespace or comma separated), else from
  classMapping40.mat (`mapClass`: the 40-class label of raw labels 1..894) and, for 13 classes, class13Mapping.mat
  (`classMapping13.labels13`: the 13-class label of the 40 classes), raw label 0 mapping to void.
  """
  for suffix in (".npy", ".txt"):
    path = manual_dir / f"class_mapping_{num_classes}{suffix}"
    if path.exists():
      if suffix == ".npy":
        return _mapping_values(_read(path), path, num_classes)
      try:
        values = np.array(path.read_text().replace(",", " ").split(), dtype=np.float64)
      except ValueError as error:
        raise ValueError(f"cannot read {path}: {error}") from error
      return _mapping_values(values, path, num_classes)
  mats = [manual_dir / name for name in MAPPING_MATS[num_classes]]
  if not all(path.exists() for path in mats):
    raise FileNotFoundError(
        f"no class mapping in {manual_dir}: expected {manual_dir / f'class_mapping_{num_classes}.npy'} (or .txt) "
        f"or {' and '.join(map(str, mats))}; it is " + MAPPING_SOURCE.format(
            C=num_classes, n=NUM_RAW_LABELS, mats=" and ".join(MAPPING_MATS[num_classes])))
  mapping = _mapping_values(np.concatenate([[0], _mat_field(mats[0], "mapClass")]), mats[0], 40)
  if num_classes == 13:
    to_13 = np.concatenate([[0], _mat_field(mats[1], "classMapping13", "labels13")])
    if to_13.shape != (41,) or not np.all(np.isin(to_13, np.arange(14))):
      raise ValueError(f"{mats[1]}: classMapping13.labels13 must hold 40 integers in 0..13 (the 13-class label of "
                       f"each of the 40 classes), got {to_13.shape[0] - 1} values")
    mapping = to_13[mapping]
  return _mapping_values(mapping, mats[-1], num_classes)


def _load_official(path: epath.Path, index: int, mapping: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
  """Example `index` (0-based) of the labeled .mat; h5py sees MATLAB's arrays with reversed axes."""
  where = f"{path} (image {index + 1})"
  try:
    with h5py.File(path, "r") as mat:
      image = np.transpose(mat["images"][index], (2, 1, 0))
      depth = np.transpose(mat["depths"][index])
      raw = np.transpose(mat["labels"][index])
  except Exception as error:
    raise ValueError(f"cannot read {where}: {type(error).__name__}: {error}") from error
  if not np.all((raw >= 0) & (raw < NUM_RAW_LABELS) & (raw == np.round(raw))):
    raise ValueError(f"{where}: raw labels must be integers in 0..{NUM_RAW_LABELS - 1}, found {raw.min()}..{raw.max()}")
  return {"image": np.asarray(image, np.uint8),
          "segmentation": _labels(mapping[raw.astype(np.int64)], 1, num_classes, where),
          "depth": _depth(depth)}


def read_official(manual_dir: epath.Path, num_classes: int) -> dict[str, list[Example]]:
  """nyu_depth_v2_labeled.mat (MATLAB v7.3: images (N, 3, W, H) uint8, depths (N, W, H) metres, labels (N, W, H)
  0..894 as h5py sees them), splits.mat (trainNdxs, testNdxs: 1-based) and a class mapping (`class_mapping`)."""
  labeled, splits_path = manual_dir / "nyu_depth_v2_labeled.mat", manual_dir / "splits.mat"
  for path in (labeled, splits_path):
    if not path.exists():
      raise _missing(path, OFFICIAL_SOURCE)
  mapping = class_mapping(manual_dir, num_classes)
  try:
    with h5py.File(labeled, "r") as mat:
      shapes = {key: mat[key].shape for key in ("images", "depths", "labels")}
  except Exception as error:
    raise ValueError(f"cannot read {labeled} as a MATLAB v7.3 (HDF5) file with images, depths and labels: "
                     f"{type(error).__name__}: {error}") from error
  images = shapes["images"]
  if len(images) != 4 or images[1] != 3 or not shapes["depths"] == shapes["labels"] == images[:1] + images[2:]:
    raise ValueError(f"{labeled}: expected images (N, 3, W, H), depths and labels (N, W, H) as h5py reads them, "
                     f"got {shapes}")
  count = images[0]
  indices = {split: _mat_field(splits_path, key) for split, key in (("train", "trainNdxs"), ("test", "testNdxs"))}
  for split, values in indices.items():
    if not np.all((values == np.round(values)) & (values >= 1) & (values <= count)):
      raise ValueError(f"{splits_path}: {split} indices must be integers in 1..{count} (the images in {labeled})")
  if np.intersect1d(indices["train"], indices["test"]).size:
    raise ValueError(f"{splits_path}: trainNdxs and testNdxs overlap")
  load = functools.partial(_load_official, labeled, mapping=mapping, num_classes=num_classes)
  return {split: [Example(str(int(i)), functools.partial(load, index=int(i) - 1)) for i in values]
          for split, values in indices.items()}
