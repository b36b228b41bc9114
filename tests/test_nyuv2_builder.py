"""nyuv2: tiny downloads written in each layout's exact on-disk format, built and read back value by value.

Fixtures are 12 x 16 (official .mat: h5py shape (5, 3, 16, 12), i.e. 12 x 16 images), 3 training and 2 test
images each. Expected values are computed here from what was written: label mapping and void, invalid depth,
normals unit or zero, derived maps, splits, resizing, and the errors a broken download must raise.
"""
import shutil

import h5py
import ml_collections
import numpy as np
import pytest
import scipy.io
from PIL import Image

from data_pipelines import datasets
from data_pipelines.nyuv2 import NyuV2, build, layouts, maps
from data_pipelines.nyuv2 import builder as nyuv2_builder

HEIGHT, WIDTH = 12, 16
TRAIN_IDS, TEST_IDS = ("0003", "0010", "0042"), ("0007", "0099")
FEATURES = {"image": (np.uint8, (3,)), "segmentation": (np.uint8, ()), "depth": (np.float32, ()),
            "normals": (np.float32, (3,)), "edges": (np.uint8, ())}


def _smooth_normals(rng, shape) -> np.ndarray:
  """Unit normals varying slowly over the image (JPEG keeps them), facing the camera (z < 0)."""
  v, u = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
  a, b = rng.uniform(-0.5, 0.5, 2)
  normals = np.stack([a + 0.4 * u, b - 0.3 * v, -np.ones(shape)], axis=-1)
  return normals / np.linalg.norm(normals, axis=-1, keepdims=True)


def _example(rng, shape=(HEIGHT, WIDTH)) -> dict[str, np.ndarray]:
  """Random maps in the layouts' raw conventions: labels 0..40 (0 void), some depth and normals invalid (0)."""
  depth = rng.uniform(0.5, 6.0, shape).astype(np.float32)
  depth[0, :3] = 0
  normals = _smooth_normals(rng, shape)
  normals[-4:, -4:] = 0
  labels = rng.integers(0, 41, shape).astype(np.uint8)
  labels[0, 0], labels[0, 1] = 0, 40
  return {"image": rng.integers(0, 256, shape + (3,), dtype=np.uint8), "labels": labels, "depth": depth,
          "normals": normals.astype(np.float32), "edges": rng.integers(0, 2, shape).astype(np.uint8)}


def _save_jpg(path, image):
  image = Image.fromarray(image)
  image.save(path, quality=100, subsampling=0)


def write_nyud_mt(root, variant: str, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """NYUD_MT under root/NYUD_MT; variant "npy" (png/npy files) or "files" (astmt's mat/jpg/png). Returns the raw
  maps by id, with the image as the JPEG decodes."""
  rng = np.random.default_rng(seed)
  base = root / "NYUD_MT"
  for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
    (base / folder).mkdir(parents=True)
  (base / "gt_sets" / "train.txt").write_text("\n".join(TRAIN_IDS) + "\n")
  (base / "gt_sets" / "val.txt").write_text("\n".join(TEST_IDS) + "\n")
  written = {}
  for id_ in TRAIN_IDS + TEST_IDS:
    raw = _example(rng)
    _save_jpg(base / "images" / f"{id_}.jpg", raw["image"])
    raw["image"] = np.asarray(Image.open(base / "images" / f"{id_}.jpg"))
    if variant == "npy":
      Image.fromarray(raw["labels"]).save(base / "segmentation" / f"{id_}.png")
      np.save(base / "depth" / f"{id_}.npy", raw["depth"])
      np.save(base / "normals" / f"{id_}.npy", raw["normals"])
      np.save(base / "edge" / f"{id_}.npy", raw["edges"])
    else:
      scipy.io.savemat(base / "segmentation" / f"{id_}.mat", {"segmentation": raw["labels"]})
      scipy.io.savemat(base / "depth" / f"{id_}.mat", {"depth": raw["depth"]})
      _save_jpg(base / "normals" / f"{id_}.jpg", np.round((raw["normals"] + 1) / 2 * 255).astype(np.uint8))
      Image.fromarray(raw["edges"] * 255).save(base / "edge" / f"{id_}.png")
    written[id_] = raw
  return written


def write_mtan(root, seed: int = 1) -> dict[str, dict[str, np.ndarray]]:
  """MTAN's nyuv2 under root/nyuv2 (train: 3, val: 2); returns the raw arrays by "<split>/<i>"."""
  rng = np.random.default_rng(seed)
  written = {}
  for folder, count in (("train", 3), ("val", 2)):
    for kind in ("image", "label", "depth", "normal"):
      (root / "nyuv2" / folder / kind).mkdir(parents=True)
    for i in range(count):
      raw = _example(rng)
      arrays = {
          "image": rng.uniform(0, 1, (HEIGHT, WIDTH, 3)).astype(np.float32),
          "label": raw["labels"].astype(np.float32) % 14 - 1,  # -1..12
          "depth": raw["depth"][..., None],
          "normal": raw["normals"] * rng.uniform(0.8, 1.2, (HEIGHT, WIDTH, 1)).astype(np.float32),
      }
      for kind, array in arrays.items():
        np.save(root / "nyuv2" / folder / kind / f"{i}.npy", array)
      written[f"{folder}/{i}"] = arrays
  return written


MAT_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def write_official(root, seed: int = 2) -> dict[str, np.ndarray]:
  """nyu_depth_v2_labeled.mat (v7.3: HDF5 after a 512-byte MATLAB header, axes reversed), splits.mat (v5) and
  class_mapping_40.npy; returns the arrays in (N, H, W[, 3]) order and the 895-entry 40-class mapping."""
  rng = np.random.default_rng(seed)
  count = 5
  images = rng.integers(0, 256, (count, HEIGHT, WIDTH, 3), dtype=np.uint8)
  depths = rng.uniform(0.5, 6.0, (count, HEIGHT, WIDTH)).astype(np.float32)
  depths[:, 5, 5] = 0
  labels = rng.integers(0, 895, (count, HEIGHT, WIDTH)).astype(np.uint16)
  labels[:, 0, 0], labels[:, 0, 1] = 0, 894
  path = root / "nyu_depth_v2_labeled.mat"
  with h5py.File(path, "w", userblock_size=512) as mat:
    mat["images"] = np.transpose(images, (0, 3, 2, 1))
    mat["depths"] = np.transpose(depths, (0, 2, 1))
    mat["labels"] = np.transpose(labels, (0, 2, 1))
  with open(path, "r+b") as file:
    file.write(MAT_HEADER.ljust(116) + bytes(8) + b"\x00\x02IM")
  scipy.io.savemat(root / "splits.mat", {"trainNdxs": np.array([[1.0], [3.0], [4.0]]),
                                         "testNdxs": np.array([[2.0], [5.0]])})
  mapping = np.concatenate([[0], np.arange(1, 895) % 40 + 1])
  mapping[894] = 40
  np.save(root / "class_mapping_40.npy", mapping)
  return {"images": images, "depths": depths, "labels": labels, "mapping": mapping}


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
  """The raw downloads (one directory per layout) and what was written into them."""
  root = tmp_path_factory.mktemp("downloads")
  written = {}
  for name, write in (("nyud_mt", lambda d: write_nyud_mt(d, "npy")), ("nyud_mt_files",
                                                                         lambda d: write_nyud_mt(d, "files")),
                      ("mtan", write_mtan), ("official", write_official)):
    (root / name).mkdir()
    written[name] = write(root / name)
  return root, written


def _copy(downloads, name, tmp_path):
  """A private copy of one download, for tests that break it."""
  return shutil.copytree(downloads[0] / name, tmp_path / name)


def _read_split(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def _check_features(example, shape):
  assert set(example) == set(FEATURES)
  for name, (dtype, channels) in FEATURES.items():
    assert example[name].dtype == dtype and example[name].shape == shape + channels, name
  norms = np.linalg.norm(example["normals"], axis=-1)
  assert np.all((norms == 0) | (np.abs(norms - 1) < 1e-5))
  assert set(np.unique(example["edges"])) <= {0, 1}
  assert np.all(example["depth"] >= 0)


def _expected_labels(raw, first_class):
  return np.where(raw == first_class - 1, 255, raw - first_class).astype(np.uint8)


@pytest.fixture(scope="module")
def nyud_mt(downloads, tmp_path_factory):
  return build(str(tmp_path_factory.mktemp("data")), "nyud_mt", str(downloads[0] / "nyud_mt"),
               validation_fraction=0.34)


def test_nyud_mt_values_round_trip(nyud_mt, downloads):
  written = downloads[1]["nyud_mt"]
  assert nyud_mt.builder_config.name == "nyud_mt_validation_fraction0.34"
  assert tuple(nyud_mt.info.metadata["class_names"]) == layouts.NYU40_CLASS_NAMES
  ids = nyud_mt.info.metadata["split_ids"]
  assert len(ids["validation"]) == 1 and sorted(ids["train"] + ids["validation"]) == sorted(TRAIN_IDS)
  assert ids["test"] == list(TEST_IDS)
  for split, split_ids in ids.items():
    for id_, example in zip(split_ids, _read_split(nyud_mt, split), strict=True):
      raw = written[id_]
      _check_features(example, (HEIGHT, WIDTH))
      np.testing.assert_array_equal(example["image"], raw["image"])
      np.testing.assert_array_equal(example["segmentation"], _expected_labels(raw["labels"], 1))
      assert example["segmentation"][0, 0] == 255 and example["segmentation"][0, 1] == 39
      np.testing.assert_array_equal(example["depth"], raw["depth"])  # zeros stay zero
      np.testing.assert_allclose(example["normals"], raw["normals"], atol=1e-6)
      assert np.all(example["normals"][-4:, -4:] == 0)
      np.testing.assert_array_equal(example["edges"], raw["edges"])


def test_nyud_mt_file_variant_decodes_mat_jpg_and_png(downloads, tmp_path):
  builder = build(str(tmp_path), "nyud_mt", str(downloads[0] / "nyud_mt_files"), validation_fraction=0.0)
  assert set(builder.info.splits) == {"train", "test"}
  ids = builder.info.metadata["split_ids"]
  for split in ("train", "test"):
    for id_, example in zip(ids[split], _read_split(builder, split), strict=True):
      raw = downloads[1]["nyud_mt_files"][id_]
      _check_features(example, (HEIGHT, WIDTH))
      np.testing.assert_array_equal(example["segmentation"], _expected_labels(raw["labels"], 1))
      np.testing.assert_array_equal(example["depth"], raw["depth"])
      np.testing.assert_array_equal(example["edges"], raw["edges"])
      valid = np.any(raw["normals"] != 0, axis=-1)
      assert np.all(example["normals"][~valid] == 0)  # JPEG grey (127.5) decodes to ~0: invalid
      cosine = np.sum(example["normals"][valid] * raw["normals"][valid], axis=-1)
      assert np.degrees(np.arccos(np.clip(cosine, -1, 1))).max() < 2.0  # 8-bit steps + JPEG (quality 100): ~1 deg


def test_mtan_conversions_and_derived_edges(downloads, tmp_path):
  builder = build(str(tmp_path), "mtan", str(downloads[0] / "mtan"), validation_fraction=0.34, seed=3)
  assert tuple(builder.info.metadata["class_names"]) == layouts.NYU13_CLASS_NAMES
  ids = builder.info.metadata["split_ids"]
  assert sorted(ids["train"] + ids["validation"]) == ["0", "1", "2"] and ids["test"] == ["0", "1"]
  for split, folder in (("train", "train"), ("validation", "train"), ("test", "val")):
    for id_, example in zip(ids[split], _read_split(builder, split), strict=True):
      raw = downloads[1]["mtan"][f"{folder}/{id_}"]
      _check_features(example, (HEIGHT, WIDTH))
      np.testing.assert_array_equal(example["image"], np.round(raw["image"].astype(np.float64) * 255))
      np.testing.assert_array_equal(example["segmentation"], _expected_labels(raw["label"], 0))
      assert 255 in example["segmentation"] and example["segmentation"].max() == 255
      assert np.all(example["segmentation"][example["segmentation"] != 255] <= 12)
      np.testing.assert_array_equal(example["depth"], raw["depth"][..., 0])
      norms = np.linalg.norm(raw["normal"], axis=-1, keepdims=True)
      np.testing.assert_allclose(example["normals"], np.where(norms > 0, raw["normal"] / np.maximum(norms, 1e-9), 0),
                                 atol=1e-6)
      np.testing.assert_array_equal(example["edges"],
                                    maps.edges_from_labels_and_depth(example["segmentation"], example["depth"]))


def test_official40_reads_reversed_axes_maps_labels_and_derives_normals(downloads, tmp_path):
  written = downloads[1]["official"]
  builder = build(str(tmp_path), "official40", str(downloads[0] / "official"), validation_fraction=0.34)
  ids = builder.info.metadata["split_ids"]
  assert sorted(ids["train"] + ids["validation"]) == ["1", "3", "4"] and ids["test"] == ["2", "5"]
  for split in ("train", "validation", "test"):
    for id_, example in zip(ids[split], _read_split(builder, split), strict=True):
      i = int(id_) - 1
      _check_features(example, (HEIGHT, WIDTH))
      np.testing.assert_array_equal(example["image"], written["images"][i])
      expected = _expected_labels(written["mapping"][written["labels"][i]], 1)
      np.testing.assert_array_equal(example["segmentation"], expected)
      assert example["segmentation"][0, 0] == 255 and example["segmentation"][0, 1] == 39  # raw 0, raw 894 → 40
      np.testing.assert_array_equal(example["depth"], written["depths"][i])
      np.testing.assert_array_equal(example["normals"], maps.normals_from_depth(written["depths"][i]))
      assert np.all(example["normals"][5, 4:7] == 0) and np.all(example["normals"][4:7, 5] == 0)  # invalid depth
      assert np.all(example["normals"][0] == 0) and np.all(example["normals"][:, -1] == 0)  # border


def test_official13_composes_the_toolbox_mat_mappings(downloads, tmp_path):
  manual = _copy(downloads, "official", tmp_path)
  (manual / "class_mapping_40.npy").unlink()
  map_class = np.arange(1, 895) % 40 + 1
  labels13 = np.arange(40) % 13 + 1
  scipy.io.savemat(manual / "classMapping40.mat", {"mapClass": map_class[None].astype(np.float64)})
  scipy.io.savemat(manual / "class13Mapping.mat", {"classMapping13": {"labels13": labels13[None].astype(np.uint8)}})
  expected = np.concatenate([[0], labels13[map_class - 1]])
  np.testing.assert_array_equal(layouts.class_mapping(manual, 13), expected)
  builder = build(str(tmp_path / "data"), "official13", str(manual), validation_fraction=0.0)
  assert tuple(builder.info.metadata["class_names"]) == layouts.NYU13_CLASS_NAMES
  written = downloads[1]["official"]
  for id_, example in zip(builder.info.metadata["split_ids"]["test"], _read_split(builder, "test"), strict=True):
    np.testing.assert_array_equal(example["segmentation"], _expected_labels(expected[written["labels"][int(id_) - 1]],
                                                                            1))


def test_class_mapping_text_and_bad_mappings(tmp_path):
  mapping = np.arange(895) % 14
  (tmp_path / "class_mapping_13.txt").write_text(", ".join(map(str, mapping)))
  np.testing.assert_array_equal(layouts.class_mapping(tmp_path, 13), mapping)
  (tmp_path / "class_mapping_13.txt").write_text(" ".join(map(str, mapping[:-1])))
  with pytest.raises(ValueError, match="class_mapping_13.txt.*895 integers"):
    layouts.class_mapping(tmp_path, 13)
  with pytest.raises(FileNotFoundError, match="class_mapping_40.npy.*classMapping40.mat.*ankurhanda"):
    layouts.class_mapping(tmp_path, 40)


def test_validation_split_is_deterministic_disjoint_and_seeded():
  ids = [f"{i:04d}" for i in range(795)]
  first = nyuv2_builder._validation_ids(ids, 0.1, seed=0)
  assert first == nyuv2_builder._validation_ids(list(reversed(ids)), 0.1, seed=0)
  assert len(first) == 80 and first <= set(ids)
  assert first != nyuv2_builder._validation_ids(ids, 0.1, seed=1)
  with pytest.raises(ValueError, match="validation_fraction"):
    nyuv2_builder._validation_ids(ids[:3], 1.0, seed=0)


def test_rebuild_with_the_same_seed_gives_the_same_splits(nyud_mt, downloads, tmp_path):
  again = build(str(tmp_path), "nyud_mt", str(downloads[0] / "nyud_mt"), validation_fraction=0.34)
  assert again.info.metadata["split_ids"] == nyud_mt.info.metadata["split_ids"]
  reopened = build(str(nyud_mt.data_dir_root), "nyud_mt", None, validation_fraction=0.34)  # prepared: no download
  assert reopened.info.metadata["split_ids"] == nyud_mt.info.metadata["split_ids"]
  for split in ("train", "validation"):
    for a, b in zip(_read_split(again, split), _read_split(nyud_mt, split), strict=True):
      np.testing.assert_array_equal(a["depth"], b["depth"])


@pytest.mark.parametrize("resolution", [(6, 8), (5, 11), (24, 32)])
def test_resolution_option(downloads, tmp_path, resolution):
  builder = build(str(tmp_path), "official40", str(downloads[0] / "official"), resolution=resolution,
                  validation_fraction=0.0)
  assert builder.info.features["depth"].shape == resolution
  labels = set(np.unique(_expected_labels(downloads[1]["official"]["mapping"][downloads[1]["official"]["labels"]],
                                          1)))
  for example in _read_split(builder, "train") + _read_split(builder, "test"):
    _check_features(example, resolution)
    assert set(np.unique(example["segmentation"])) <= labels
    np.testing.assert_array_equal(example["normals"], maps.normals_from_depth(example["depth"]))


@pytest.mark.parametrize("overrides", [{"resolution": (0, 8)}, {"resolution": (8,)}, {"validation_fraction": 1.0}])
def test_invalid_config_values_are_refused(tmp_path, overrides):
  with pytest.raises(ValueError, match=next(iter(overrides))):
    build(str(tmp_path), "nyud_mt", str(tmp_path), **overrides)


def test_resizing_rules():
  depth = np.array([[1, 3, 0, 0], [0, 2, 0, 4]], np.float32)
  np.testing.assert_allclose(maps.resize_depth(depth, (1, 2)), [[2, 4]])
  np.testing.assert_allclose(maps.resize_depth(depth, (4, 8))[::2, ::2], depth)  # upsampling repeats pixels
  edges = np.array([[0, 0, 0, 0], [0, 1, 0, 0]], np.uint8)
  np.testing.assert_array_equal(maps.resize_edges(edges, (1, 2)), [[1, 0]])
  labels = np.arange(16, dtype=np.uint8).reshape(4, 4)
  np.testing.assert_array_equal(maps.resize_labels(labels, (2, 2)), [[5, 7], [13, 15]])
  normals = np.zeros((2, 2, 3), np.float32)
  normals[0, 0] = (0, 0, -1)
  normals[1, 1] = (1, 0, 0)
  np.testing.assert_allclose(maps.resize_normals(normals, (1, 1))[0, 0], np.array([1, 0, -1]) / np.sqrt(2),
                             atol=1e-6)
  normals[1, 1] = (0, 0, 1)  # opposite normals average to ~0: invalid
  assert np.all(maps.resize_normals(normals, (1, 1)) == 0)


def test_normals_from_depth_on_a_plane():
  height, width = 48, 64
  fx, fy, cx, cy = maps.intrinsics((height, width))
  normal = np.array([0.3, -0.5, -0.8]) / np.linalg.norm([0.3, -0.5, -0.8])
  v, u = np.mgrid[0:height, 0:width]
  rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones((height, width))], axis=-1)
  depth = (-3.0 / (rays @ normal)).astype(np.float32)  # plane n . P = 3 (camera 3 m in front of it)
  depth[20, 30] = 0
  normals = maps.normals_from_depth(depth)
  inside = np.ones((height, width), bool)
  inside[[0, -1]], inside[:, [0, -1]] = False, False
  for dv, du in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
    inside[20 + dv, 30 + du] = False
  np.testing.assert_allclose(normals[inside], np.broadcast_to(normal, normals[inside].shape), atol=1e-4)
  assert np.all(normals[~inside] == 0)
  assert maps.intrinsics((480, 640)) == pytest.approx(maps.NYU_INTRINSICS)


def test_edges_from_labels_and_depth_mark_the_nearer_side():
  labels = np.zeros((3, 4), np.uint8)
  labels[:, 2:] = 1
  depth = np.full((3, 4), 2.0, np.float32)
  depth[:, 2:] = 1.0  # the right half is nearer: its left column is the edge
  depth[0, 0] = 3.0  # a 50 % jump inside the left half: (0, 1) is nearer than (0, 0)
  depth[2, 0] = 2.1  # a 5 % step: no edge
  expected = np.zeros((3, 4), np.uint8)
  expected[:, 2] = 1
  expected[0, 1] = expected[1, 0] = 1
  np.testing.assert_array_equal(maps.edges_from_labels_and_depth(labels, depth), expected)


# Errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_manual_dir_names_path_and_source(tmp_path, make):
  manual = tmp_path / "manual"
  if make == "empty":
    manual.mkdir()
  with pytest.raises(FileNotFoundError, match=f"(?s){manual}.*kmaninis.*dropbox.*fergus"):
    build(str(tmp_path / "data"), "nyud_mt", str(manual))


def _nyud_mt_error(downloads, tmp_path, breaks, error, match):
  manual = _copy(downloads, "nyud_mt", tmp_path)
  breaks(manual / "NYUD_MT")
  with pytest.raises(error, match=match):
    build(str(tmp_path / "data"), "nyud_mt", str(manual))


def test_missing_folder_names_it_and_the_source(downloads, tmp_path):
  _nyud_mt_error(downloads, tmp_path, lambda root: shutil.rmtree(root / "depth"), FileNotFoundError,
                 r"NYUD_MT/depth not found.*astmt.*NYUD_MT\.tgz")


def test_folder_with_neither_variant_is_named(downloads, tmp_path):
  def breaks(root):
    for path in (root / "edge").iterdir():
      path.rename(path.with_suffix(".txt"))
  _nyud_mt_error(downloads, tmp_path, breaks, FileNotFoundError, r"NYUD_MT/edge holds neither \*\.npy nor \*\.png")


def test_listed_id_without_files_is_named(downloads, tmp_path):
  _nyud_mt_error(downloads, tmp_path, lambda root: (root / "normals" / "0010.npy").unlink(), FileNotFoundError,
                 r"normals/0010\.npy not found, but .*gt_sets/train\.txt lists '0010'")


def test_unreadable_npy_is_named(downloads, tmp_path):
  _nyud_mt_error(downloads, tmp_path, lambda root: (root / "depth" / "0042.npy").write_bytes(b"\x93NUMPY garbage"),
                 ValueError, r"cannot read .*depth/0042\.npy")


def test_depth_shape_mismatch_is_named(downloads, tmp_path):
  _nyud_mt_error(downloads, tmp_path, lambda root: np.save(root / "depth" / "0003.npy", np.ones((12, 15))),
                 ValueError, r"depth/0003\.npy has shape \(12, 15\), expected \(12, 16\).*images/0003\.jpg")


def test_corrupt_mat_is_named(downloads, tmp_path):
  manual = _copy(downloads, "nyud_mt_files", tmp_path)
  (manual / "NYUD_MT" / "depth" / "0007.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
  with pytest.raises(ValueError, match=r"cannot read .*depth/0007\.mat"):
    build(str(tmp_path / "data"), "nyud_mt", str(manual))


def test_interrupted_build_is_not_prepared_and_rebuilds(downloads, tmp_path):
  """A corrupt JPEG in the test split fails after the train split was written; nothing looks complete."""
  manual = _copy(downloads, "nyud_mt", tmp_path)
  image = manual / "NYUD_MT" / "images" / "0099.jpg"
  good = image.read_bytes()
  image.write_bytes(good[: len(good) // 3])
  data_dir = tmp_path / "data"
  with pytest.raises(ValueError, match=r"cannot read .*images/0099\.jpg"):
    build(str(data_dir), "nyud_mt", str(manual))
  builder = NyuV2(data_dir=str(data_dir), config="nyud_mt", file_format="array_record")
  assert not builder.is_prepared()
  assert not any(data_dir.glob("nyuv2/nyud_mt/*"))  # neither 1.0.0 nor an incomplete temporary directory
  image.write_bytes(good)
  builder = build(str(data_dir), "nyud_mt", str(manual))
  assert builder.is_prepared()
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {"test": 2, "train": 3}


def test_mtan_missing_and_extra_files_are_named(downloads, tmp_path):
  manual = _copy(downloads, "mtan", tmp_path)
  (manual / "nyuv2" / "val" / "label" / "1.npy").unlink()
  with pytest.raises(FileNotFoundError, match=r"val/label/1\.npy not found, but .*val/image/1\.npy exists"):
    build(str(tmp_path / "data"), "mtan", str(manual))
  np.save(manual / "nyuv2" / "val" / "label" / "1.npy", np.zeros((HEIGHT, WIDTH), np.float32))
  np.save(manual / "nyuv2" / "val" / "depth" / "7.npy", np.zeros((HEIGHT, WIDTH, 1), np.float32))
  with pytest.raises(ValueError, match=r"val/depth/7\.npy has no image"):
    build(str(tmp_path / "data"), "mtan", str(manual))


def test_official_errors_name_the_file(downloads, tmp_path):
  manual = _copy(downloads, "official", tmp_path)
  data_dir = str(tmp_path / "data")
  (manual / "splits.mat").rename(manual / "splits.bak")
  with pytest.raises(FileNotFoundError, match=r"splits\.mat not found.*fergus"):
    build(data_dir, "official40", str(manual))
  (manual / "splits.bak").rename(manual / "splits.mat")
  with pytest.raises(FileNotFoundError, match=r"class_mapping_13\.npy.*class13Mapping\.mat"):
    build(data_dir, "official13", str(manual))
  with h5py.File(manual / "nyu_depth_v2_labeled.mat", "r+") as mat:
    depths = mat["depths"][:4]
    del mat["depths"]
    mat["depths"] = depths
  with pytest.raises(ValueError, match=r"nyu_depth_v2_labeled\.mat: expected images \(N, 3, W, H\)"):
    build(data_dir, "official40", str(manual))
  scipy.io.savemat(manual / "nyu_depth_v2_labeled.mat", {"images": np.zeros(3)})  # a v5 file is not HDF5
  with pytest.raises(ValueError, match=r"cannot read .*nyu_depth_v2_labeled\.mat as a MATLAB v7\.3"):
    build(data_dir, "official40", str(manual))


def test_datasets_entry_needs_manual_dir_and_passes_overrides(downloads, tmp_path):
  config = ml_collections.ConfigDict({"name": "nyuv2", "config": "mtan", "manual_dir": None,
                                      "data_dir": str(tmp_path), "overrides": {"validation_fraction": 0.0}})
  with pytest.raises(ValueError, match="--config.data.manual_dir"):
    datasets.open_dataset(config)
  config.manual_dir = str(downloads[0] / "mtan")
  dataset = datasets.open_dataset(config)
  assert dataset.builder.builder_config.name == "mtan_validation_fraction0.0"
  assert len(dataset.source("test")) == 2
