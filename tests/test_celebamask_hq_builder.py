"""celebamask_hq: builds from a tiny release written in the official on-disk format, read back and checked exactly.

The fixture has six images in three mask folders (32² JPEGs, 16² part masks as grey, RGB and palette PNGs, random
overlapping rectangles, parts absent at random), an attribute file with its count line, header and double spaces,
and a mapping file whose orig_idx values sit on both sides of the official split boundaries. Expected labels are
recomputed here from the masks, with the part order written out independently of the builder's constant.
"""
import os
import re
import shutil

import ml_collections
import numpy as np
import pytest
from PIL import Image

from data_pipelines import datasets
from data_pipelines.celebamask_hq import builder as cmhq
from data_pipelines.celebamask_hq import ATTRIBUTE_NAMES, build

IDS = (0, 1, 2, 3, 2000, 4001)  # mask folders 0, 1 and 2
# orig_idx per image: train below 162771, validation below 182638, test from there on.
ORIG_IDX = {0: 162770, 1: 5, 2: 162771, 3: 182638, 2000: 182637, 4001: 200000}
OFFICIAL = {"train": [0, 1], "validation": [2, 2000], "test": [3, 4001]}
IMAGE_SIZE, MASK_SIZE = 32, 16
OFFICIAL_ORDER = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip",
                  "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
SKIN = {"skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "neck"}


def _save_mask(mask: np.ndarray, path: str, style: int):
  """Writes a bool mask as a 0/255 PNG: grey, 3-channel RGB, or palette (index 1 = white)."""
  values = mask.astype(np.uint8) * 255
  if style == 0:
    Image.fromarray(values).save(path)
  elif style == 1:
    Image.fromarray(np.repeat(values[..., None], 3, axis=-1)).save(path)
  else:
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.save(path)


def _write_release(root: str) -> dict:
  """Writes the tiny release into `root`; returns {k: (part → bool (16, 16) mask, int8 (40,) ±1 attributes)}."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "CelebA-HQ-img"))
  truth = {}
  for k in IDS:
    pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, "CelebA-HQ-img", f"{k}.jpg"), quality=90)
    folder = os.path.join(root, "CelebAMask-HQ-mask-anno", str(k // 2000))
    os.makedirs(folder, exist_ok=True)
    masks = {}
    for part in OFFICIAL_ORDER:
      if rng.random() < 0.3:  # absent part: no file
        continue
      r0, c0 = rng.integers(0, MASK_SIZE - 4, 2)
      r1, c1 = rng.integers([r0 + 2, c0 + 2], MASK_SIZE + 1)
      mask = np.zeros((MASK_SIZE, MASK_SIZE), bool)
      mask[r0:r1, c0:c1] = True
      masks[part] = mask
      _save_mask(mask, os.path.join(folder, f"{k:05d}_{part}.png"), int(rng.integers(3)))
    truth[k] = (masks, rng.choice(np.array([1, -1], np.int8), len(ATTRIBUTE_NAMES)))
  # Image 0 gets fixed overlaps and nothing else on two pixels: skin, hair, neck on one; eye_g, l_eye on the other.
  overlaps = {(1, 1): ("skin", "hair", "neck"), (2, 2): ("eye_g", "l_eye")}
  masks = truth[0][0]
  for part in {p for parts in overlaps.values() for p in parts}:
    masks.setdefault(part, np.zeros((MASK_SIZE, MASK_SIZE), bool))
  for pixel, parts in overlaps.items():
    for part, mask in masks.items():
      mask[pixel] = part in parts
  for part, mask in masks.items():
    _save_mask(mask, os.path.join(root, "CelebAMask-HQ-mask-anno", "0", f"00000_{part}.png"), 0)
  rows = [f"{k}.jpg  " + "".join(f"{v}{'  ' if i % 3 == 0 else ' '}" for i, v in enumerate(values)).rstrip()
          for k, (_, values) in truth.items()]
  with open(os.path.join(root, "CelebAMask-HQ-attribute-anno.txt"), "w") as f:
    f.write(f"{len(IDS)}\n" + " ".join(ATTRIBUTE_NAMES) + "\n" + "\n".join(rows) + "\n")
  with open(os.path.join(root, "CelebA-HQ-to-CelebA-mapping.txt"), "w") as f:
    f.write("idx         orig_idx    orig_file\n")
    f.writelines(f"{k}  {orig}  {orig + 1:06d}.jpg\n" for k, orig in [*ORIG_IDX.items(), (7, 9)])
  return truth


def _labels19(masks: dict) -> np.ndarray:
  labels = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
  for label, part in enumerate(OFFICIAL_ORDER, 1):
    if part in masks:
      labels[masks[part]] = label
  return labels


def _labels3(masks: dict) -> np.ndarray:
  labels = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
  for part in SKIN & set(masks):
    labels[masks[part]] = 2
  if "hair" in masks:
    labels[masks["hair"]] = 1
  return labels


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("release") / "CelebAMask-HQ")
  return root, _write_release(root)


@pytest.fixture
def broken(release, tmp_path):
  """A fresh copy of the release, to damage."""
  root = str(tmp_path / "CelebAMask-HQ")
  shutil.copytree(release[0], root)
  return root


def _read_all(builder, split: str) -> list[dict]:
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def test_constants_follow_the_official_release():
  assert cmhq.PARTS == OFFICIAL_ORDER
  assert cmhq.CLASS_NAMES["parts19"] == ("background",) + OFFICIAL_ORDER
  assert len(ATTRIBUTE_NAMES) == 40 == len(set(ATTRIBUTE_NAMES))
  assert ATTRIBUTE_NAMES.index("Male") == 20 and ATTRIBUTE_NAMES.index("Smiling") == 31


def test_parts19_official_split_decodes_exactly(release, tmp_path):
  root, truth = release
  builder = build(str(tmp_path), "parts19", root, resolution=MASK_SIZE)
  assert builder.info.metadata["class_names"] == cmhq.CLASS_NAMES["parts19"]
  assert tuple(builder.info.metadata["attribute_names"]) == ATTRIBUTE_NAMES
  assert set(builder.info.splits) == set(OFFICIAL)
  for split, ids in OFFICIAL.items():
    examples = _read_all(builder, split)
    assert [int(e["image_id"]) for e in examples] == ids
    for e in examples:
      k = int(e["image_id"])
      masks, values = truth[k]
      np.testing.assert_array_equal(e["segmentation"], _labels19(masks))
      assert e["segmentation"].dtype == np.uint8
      np.testing.assert_array_equal(e["attributes"], (values == 1).astype(np.uint8))
      with Image.open(os.path.join(root, "CelebA-HQ-img", f"{k}.jpg")) as image:
        expected = np.asarray(image.convert("RGB").resize((MASK_SIZE,) * 2, Image.LANCZOS))
      np.testing.assert_array_equal(e["image"], expected)
  first = _read_all(builder, "train")[0]
  assert first["segmentation"][1, 1] == 17  # skin, hair, neck: neck paints last
  assert first["segmentation"][2, 2] == 4  # eye_g, l_eye: l_eye paints last
  absent = [part for part in OFFICIAL_ORDER if part not in truth[0][0]]
  assert absent and not np.isin(first["segmentation"], [OFFICIAL_ORDER.index(p) + 1 for p in absent]).any()


def test_hair_skin3_resized_keeps_labels_and_takes_centre_pixels(release, tmp_path):
  root, truth = release
  builder = build(str(tmp_path), "hair_skin3", root, resolution=8)
  assert builder.info.metadata["class_names"] == ("background", "hair", "skin")
  for split in OFFICIAL:
    for e in _read_all(builder, split):
      assert e["image"].shape == (8, 8, 3) and e["segmentation"].shape == (8, 8)
      assert set(np.unique(e["segmentation"])) <= {0, 1, 2}
      np.testing.assert_array_equal(e["segmentation"], _labels3(truth[int(e["image_id"])][0])[1::2, 1::2])


def test_hair_overwrites_skin_and_accessories_are_background(release):
  root, truth = release
  folder = os.path.join(root, "CelebAMask-HQ-mask-anno", "0")
  files = {p: os.path.join(folder, f"00000_{p}.png") for p in truth[0][0]}
  labels = cmhq.compose_labels(files, "hair_skin3")
  np.testing.assert_array_equal(labels, _labels3(truth[0][0]))
  assert labels[1, 1] == 1  # skin, hair, neck: hair wins although neck comes later in the 19-class order
  assert cmhq.SKIN_PARTS == tuple(p for p in OFFICIAL_ORDER if p in SKIN)
  assert cmhq.compose_labels({}, "hair_skin3") is None  # no masks: the builder stores all background


def test_resize_nearest_reads_pixel_centres():
  labels = np.arange(16 * 16, dtype=np.int32).reshape(16, 16)
  np.testing.assert_array_equal(cmhq.resize_nearest(labels, 8), labels[1::2, 1::2])
  np.testing.assert_array_equal(cmhq.resize_nearest(labels, 32), labels.repeat(2, 0).repeat(2, 1))
  np.testing.assert_array_equal(cmhq.resize_nearest(labels, 16), labels)
  big = np.arange(512)[:, None] * 1000 + np.arange(512)
  np.testing.assert_array_equal(cmhq.resize_nearest(big, 256), big[1::2, 1::2])


def test_random_split_is_seeded_disjoint_and_capped(release, tmp_path):
  root, _ = release
  builder = build(str(tmp_path), "parts19", root, resolution=4, split="random", fractions=(0.5, 0.25, 0.25), seed=3)
  built = {split: [int(e["image_id"]) for e in _read_all(builder, split)] for split in builder.info.splits}
  assert built == cmhq.random_splits(list(IDS), (0.5, 0.25, 0.25), 3)
  assert [len(built[s]) for s in ("train", "validation", "test")] == [3, 2, 1]
  assert sorted(sum(built.values(), [])) == sorted(IDS)
  assert all(ids == sorted(ids) for ids in built.values())
  many = list(range(0, 3000, 3))
  first = cmhq.random_splits(many, (0.8, 0.1, 0.1), 0)
  assert first == cmhq.random_splits(many, (0.8, 0.1, 0.1), 0)
  assert first != cmhq.random_splits(many, (0.8, 0.1, 0.1), 1)
  assert [len(first[s]) for s in ("train", "validation", "test")] == [800, 100, 100]
  capped = build(str(tmp_path), "parts19", root, resolution=4, max_examples=1)
  assert capped.builder_config.name == "parts19_max_examples1_resolution4"
  assert {s: [int(e["image_id"]) for e in _read_all(capped, s)] for s in capped.info.splits} == {
      s: ids[:1] for s, ids in OFFICIAL.items()}


def test_interrupted_build_leaves_nothing_prepared(broken, tmp_path):
  image = os.path.join(broken, "CelebA-HQ-img", "4001.jpg")  # the last example of the last split
  with open(image, "rb") as f:
    data = f.read()
  with open(image, "wb") as f:
    f.write(data[:len(data) // 2])
  data_dir = tmp_path / "data"
  with pytest.raises(ValueError, match=re.escape(image)):
    build(str(data_dir), "parts19", broken, resolution=8)
  config = cmhq.CelebAMaskHQConfig(name="parts19_resolution8", resolution=8)
  assert not cmhq.CelebAMaskHQ(data_dir=str(data_dir), config=config).is_prepared()
  assert not [p for p in data_dir.rglob("*") if "incomplete" in p.name]
  assert not (data_dir / "celebamask_hq" / "parts19_resolution8" / "1.0.0").exists()


def test_missing_manual_dir_and_files_name_the_path_and_the_source(broken, tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=re.escape(missing) + "(.|\n)*github.com/switchablenorms/CelebAMask-HQ"):
    build(str(tmp_path / "d0"), "parts19", missing)
  with pytest.raises(ValueError, match="manual_dir"):
    build(str(tmp_path / "d0"), "parts19")
  with pytest.raises(FileNotFoundError) as error:  # manual_dir one level too high
    build(str(tmp_path / "d0"), "parts19", os.path.dirname(broken))
  assert os.path.join(os.path.dirname(broken), "CelebA-HQ-img") in str(error.value)
  assert "pass that folder as manual_dir" in "".join(error.value.__notes__)
  os.remove(os.path.join(broken, "CelebA-HQ-to-CelebA-mapping.txt"))
  with pytest.raises(FileNotFoundError, match=re.escape(os.path.join(broken, "CelebA-HQ-to-CelebA-mapping.txt"))):
    build(str(tmp_path / "d1"), "parts19", broken)
  shutil.rmtree(os.path.join(broken, "CelebAMask-HQ-mask-anno", "1"))
  with pytest.raises(FileNotFoundError, match=re.escape(os.path.join(broken, "CelebAMask-HQ-mask-anno", "1"))):
    build(str(tmp_path / "d2"), "parts19", broken, split="random")


def _attribute_lines(root: str) -> list[str]:
  with open(os.path.join(root, "CelebAMask-HQ-attribute-anno.txt")) as f:
    return f.read().splitlines()


@pytest.mark.parametrize("edit, line, message", [
    (lambda lines: ["7"] + lines[1:], 1, "says 7 images but 6 rows"),
    (lambda lines: lines[:2] + [lines[2].rsplit(" ", 1)[0]] + lines[3:], 3, "found 40 fields"),
    (lambda lines: lines[:4] + [lines[4].rsplit(" ", 1)[0] + " 0"] + lines[5:], 5, r"must be 1 or -1, found \['0'\]"),
    (lambda lines: lines[:2] + ["9.jpg" + lines[2].split(".jpg", 1)[1]] + lines[3:], 3, "9.jpg does not exist"),
    (lambda lines: lines[:3] + [lines[2]] + lines[3:], 4, "listed twice"),
    (lambda lines: [lines[0], " ".join(ATTRIBUTE_NAMES[1::-1] + ATTRIBUTE_NAMES[2:])] + lines[2:], 2,
     "attribute names differ"),
    (lambda lines: lines[:2] + ["0.png" + lines[2].split(".jpg", 1)[1]] + lines[3:], 3, "expected an image name"),
])
def test_malformed_attribute_file_names_file_and_line(broken, tmp_path, edit, line, message):
  path = os.path.join(broken, "CelebAMask-HQ-attribute-anno.txt")
  lines = edit(_attribute_lines(broken))
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: ") + ".*" + message):
    build(str(tmp_path), "parts19", broken, resolution=4)


def test_mapping_file_errors_name_file_and_line(broken, tmp_path):
  path = os.path.join(broken, "CelebA-HQ-to-CelebA-mapping.txt")
  with open(path) as f:
    lines = f.read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join(lines[:3] + ["2 x 000.jpg"] + lines[4:]) + "\n")
  with pytest.raises(ValueError, match=re.escape(f"{path}:4: ")):
    build(str(tmp_path), "parts19", broken, resolution=4)
  with open(path, "w") as f:
    f.write("\n".join(line for line in lines if not line.startswith("2000 ")) + "\n")
  with pytest.raises(ValueError, match=re.escape(f"{path}: no row for image 2000.jpg")):
    build(str(tmp_path), "parts19", broken, resolution=4)


def test_bad_masks_and_images_name_the_file(broken, release):
  _, truth = release
  folder = os.path.join(broken, "CelebAMask-HQ-mask-anno", "0")
  part = next(iter(truth[1][0]))
  corrupt = os.path.join(folder, f"00001_{part}.png")
  with open(corrupt, "wb") as f:
    f.write(b"not a png")
  files = {p: os.path.join(folder, f"00001_{p}.png") for p in truth[1][0]}
  with pytest.raises(ValueError, match=re.escape(corrupt)):
    cmhq.compose_labels(files, "parts19")
  parts = sorted(truth[2][0], key=OFFICIAL_ORDER.index)
  small = os.path.join(folder, f"00002_{parts[-1]}.png")
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(small)
  with pytest.raises(ValueError, match=re.escape(small) + ".*8x8 but"):
    cmhq.compose_labels({p: os.path.join(folder, f"00002_{p}.png") for p in parts}, "parts19")
  wide = os.path.join(broken, "CelebA-HQ-img", "3.jpg")
  Image.new("RGB", (32, 24)).save(wide)
  with pytest.raises(ValueError, match=re.escape(wide) + ".*square"):
    cmhq.load_image(wide, 16)


def test_config_fields_are_validated():
  for bad in (dict(classes="parts18"), dict(split="kfold"), dict(fractions=(0.5, 0.5, 0.5)), dict(resolution=0),
              dict(max_examples=-1)):
    with pytest.raises(ValueError):
      cmhq.CelebAMaskHQConfig(name="bad", **bad)


def test_registered_in_datasets(release, tmp_path):
  data_config = ml_collections.ConfigDict(dict(name="celebamask_hq", config="hair_skin3", data_dir=str(tmp_path),
                                               overrides=dict(resolution=4, max_examples=1)))
  with pytest.raises(ValueError, match="--config.data.manual_dir"):
    datasets.open_dataset(data_config)
  data_config.manual_dir = release[0]
  dataset = datasets.open_dataset(data_config)
  assert dataset.attribute_names == ATTRIBUTE_NAMES
  assert dataset.builder.info.full_name == "celebamask_hq/hair_skin3_max_examples1_resolution4/1.0.0"
  assert len(dataset.source("validation")) == 1
