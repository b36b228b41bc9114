"""tfds builder `celebamask_hq`: CelebAMask-HQ faces with face-part segmentation and the 40 CelebA attributes.

Built without TensorFlow from the user's download (see MANUAL_DOWNLOAD_INSTRUCTIONS) to array_record files, read with
`builder.as_data_source(split)` (numpy examples):

  python -m data_pipelines.celebamask_hq --data_dir=~/tensorflow_datasets --manual_dir=DIR [--config=parts19]

or `build(data_dir, config, manual_dir)` from Python. Examples follow the feature layout of `episodes`: `image` uint8
(R, R, 3); `segmentation` uint8 (R, R), labels 0..len(class_names) - 1, no void label (every pixel is labelled, with
background where no part is annotated); `attributes` uint8 (40,) in ATTRIBUTE_NAMES order, 1 where the annotation
file says 1 and 0 where it says -1. `image_id` (int32) is the CelebA-HQ index k of `CelebA-HQ-img/<k>.jpg`.

Segmentation. The per-part binary masks (nonzero = part, as the official preprocessing reads them) are combined at
the masks' own size (512² in the release): `parts19` paints the 18 parts in PARTS order, label i + 1 for PARTS[i],
later parts overwriting earlier ones, the order of face_parsing/Data_preprocessing/g_mask.py in the CelebAMask-HQ
repository; `hair_skin3` labels background 0, hair 1, skin 2, where skin is the union of SKIN_PARTS (face and neck:
skin, nose, eyes, brows, ears, mouth, lips, neck) and hair overwrites skin. The meta-sparsity authors name this
background/hair/skin variant without publishing which parts count as skin; accessories (eye_g, hat, ear_r, neck_l)
and cloth are background here. An image without any part mask is all background, as in g_mask.py.

Resizing to `resolution` R. Images (1024² in the release) are resampled with PIL's LANCZOS filter (antialiased
when downsampling); label maps are resampled by nearest neighbour at pixel centres: output pixel i reads source
pixel floor((i + 0.5) * S / R) of an S-pixel side (512 → 256 reads the odd pixels 1, 3, ...). Sizes are read from
the files, and images and masks must be square.

Images are stored PNG-encoded: lossless, so the stored pixels are exactly the resampled ones. Re-encoding as JPEG
would add a second lossy generation (the release's JPEGs are already compressed at 1024², and 8×8 JPEG blocks
cover 4× more of the face at 256²) to save about 3× the disk (~120 KB vs ~35 KB per 256² portrait).

Splits. `official` uses CelebA-HQ-to-CelebA-mapping.txt: CelebA index orig_idx < 162771 is train, < 182638
validation, else test (24,183 / 2,993 / 2,824), as face_parsing/Data_preprocessing/g_partition.py does.
`random` shuffles the image indices with np.random.default_rng(seed) and cuts them by `fractions` (train,
validation, test), deterministic for a given seed and attribute file; the authors' own random split is not
published. Each split lists its examples by ascending image index; `max_examples` > 0 keeps the first ones of each
split (a prefix of the full build's split) for quick tries. A split without examples is left out.
"""
import dataclasses
import io
import os
from typing import Iterator

import numpy as np
from etils import epath
import tensorflow_datasets as tfds
from PIL import Image

from data_pipelines import builders

SOURCE_URL = "https://github.com/switchablenorms/CelebAMask-HQ"
IMAGE_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
ATTRIBUTE_FILE = "CelebAMask-HQ-attribute-anno.txt"
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
IMAGES_PER_MASK_FOLDER = 2000

# The 18 annotated parts, in the official overwrite order (later parts win where masks overlap).
PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip",
         "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
SKIN_PARTS = ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip", "l_lip",
              "neck")
CLASS_NAMES = {"parts19": ("background",) + PARTS, "hair_skin3": ("background", "hair", "skin")}
# CelebA's attribute order, which line 2 of the attribute file must repeat.
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young")
SPLITS = ("train", "validation", "test")
# First CelebA index (orig_idx) of the official validation and test splits.
OFFICIAL_SPLIT_STARTS = (162771, 182638)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download CelebAMask-HQ from {SOURCE_URL} (the Google Drive or Baidu Drive link in its
README; non-commercial research use only, see its Dataset Agreement), unzip it, and pass the unzipped
`CelebAMask-HQ` folder as manual_dir. It must hold:
  {IMAGE_DIR}/<k>.jpg                                   the 30,000 images, k = 0..29999 (1024x1024)
  {MASK_DIR}/<k // 2000>/<k:05d>_<part>.png  binary part masks (512x512); an absent part has no file
  {ATTRIBUTE_FILE}                      line 1: image count; line 2: the 40 attribute names;
                                                        then per line `<k>.jpg` and 40 values in {{1, -1}}
  {MAPPING_FILE}                       `idx orig_idx orig_file` rows (for the official split)
"""


@dataclasses.dataclass(eq=False, kw_only=True)
class CelebAMaskHQConfig(tfds.core.BuilderConfig):
  """What to build from the download.

  Attributes:
    classes: "parts19" (background + the 18 parts) or "hair_skin3" (background, hair, skin).
    resolution: side R of the stored square images and label maps, pixels.
    split: "official" (by CelebA index, from the mapping file) or "random" (seeded, by `fractions`).
    fractions: (train, validation, test) shares of the random split; non-negative, summing to 1.
    seed: seed of the random split.
    max_examples: if > 0, each split keeps only its first max_examples examples (quick tries); 0 keeps all.
  """
  classes: str = "parts19"
  resolution: int = 256
  split: str = "official"
  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  seed: int = 0
  max_examples: int = 0

  def __post_init__(self):
    self.fractions = tuple(float(f) for f in self.fractions)
    if self.classes not in CLASS_NAMES:
      raise ValueError(f"classes={self.classes!r}; choose one of {sorted(CLASS_NAMES)}")
    if self.split not in ("official", "random"):
      raise ValueError(f"split={self.split!r}; choose 'official' or 'random'")
    if len(self.fractions) != 3 or min(self.fractions) < 0 or abs(sum(self.fractions) - 1) > 1e-6:
      raise ValueError(f"fractions={self.fractions} must be three non-negative shares summing to 1")
    if self.resolution < 1 or self.max_examples < 0:
      raise ValueError(f"resolution={self.resolution} must be positive and max_examples={self.max_examples} "
                       "non-negative")


class CelebAMaskHQ(tfds.core.GeneratorBasedBuilder):
  """CelebAMask-HQ: face image, face-part segmentation, 40 binary attributes."""

  name = "celebamask_hq"  # tfds would derive celeb_a_mask_hq from the class name
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [CelebAMaskHQConfig(name=classes, classes=classes) for classes in CLASS_NAMES]
  DEFAULT_CONFIG_NAME = "parts19"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  # tfds 4.9.10 derives code_path through `importlib_resources`, which etils 1.15 no longer installs; this is the
  # value it would derive.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    shape = (config.resolution,) * 2
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            **builders.image_and_maps(shape, ("segmentation",)),
            "attributes": tfds.features.Tensor(shape=(len(ATTRIBUTE_NAMES),), dtype=np.uint8),
            "image_id": tfds.features.Scalar(dtype=np.int32),
        }),
        homepage=SOURCE_URL,
        metadata=tfds.core.MetadataDict(class_names=CLASS_NAMES[config.classes], attribute_names=ATTRIBUTE_NAMES),
        disable_shuffling=True,  # keeps a split's examples in ascending image index
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    root = check_manual_dir(dl_manager.manual_dir)
    attributes = read_attributes(root / ATTRIBUTE_FILE, root / IMAGE_DIR)
    if config.split == "official":
      splits = official_splits(root / MAPPING_FILE, attributes)
    else:
      splits = random_splits(sorted(attributes), config.fractions, config.seed)
    if config.max_examples:
      splits = {name: ids[:config.max_examples] for name, ids in splits.items()}
    masks = _MaskIndex(root / MASK_DIR, [k for ids in splits.values() for k in ids])
    # tfds refuses to write an empty split.
    return {name: self._generate_examples(root, ids, attributes, masks) for name, ids in splits.items() if ids}

  def _generate_examples(self, root: epath.Path, ids: list[int], attributes: dict[int, np.ndarray],
                         masks: "_MaskIndex") -> Iterator[tuple[int, dict]]:
    config = self.builder_config
    for k in ids:
      image = load_image(root / IMAGE_DIR / f"{k}.jpg", config.resolution)
      png = io.BytesIO()
      image.save(png, format="PNG", compress_level=1)  # ~4x faster than the default level, ~6 % larger
      labels = compose_labels(masks.part_files(k), config.classes)
      segmentation = (np.zeros((config.resolution,) * 2, np.uint8) if labels is None
                      else resize_nearest(labels, config.resolution))
      yield k, {"image": png.getvalue(), "segmentation": segmentation, "attributes": attributes[k],
                "image_id": k}


def _missing(path: epath.Path, what: str) -> FileNotFoundError:
  return FileNotFoundError(f"CelebAMask-HQ: {path} ({what}) does not exist.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def check_manual_dir(manual_dir: epath.PathLike) -> epath.Path:
  """Returns `manual_dir` as a path after checking that it holds the release's top-level files and folders.

  Raises:
    FileNotFoundError: naming the first missing path, with the download instructions (and a hint when manual_dir
      is the folder above the unzipped `CelebAMask-HQ`).
  """
  root = epath.Path(manual_dir).expanduser()
  if not root.is_dir():
    raise _missing(root, "manual_dir")
  for name, what in ((IMAGE_DIR, "image folder"), (MASK_DIR, "mask folder"), (ATTRIBUTE_FILE, "attribute file")):
    if not (root / name).exists():
      error = _missing(root / name, what)
      if (root / "CelebAMask-HQ" / name).exists():
        error.add_note(f"It is in {root / 'CelebAMask-HQ'}: pass that folder as manual_dir.")
      raise error
  return root


def _parse_error(path: epath.Path, line: int, message: str) -> ValueError:
  return ValueError(f"{path}:{line}: {message}")


def read_attributes(path: epath.Path, image_dir: epath.Path) -> dict[int, np.ndarray]:
  """Reads the attribute file: image index k → uint8 (40,) {0, 1} in ATTRIBUTE_NAMES order (1 where the file has 1).

  Args:
    path: CelebAMask-HQ-attribute-anno.txt: line 1 the image count, line 2 the 40 names, then one line per image,
      `<k>.jpg` and 40 values in {1, -1}, separated by any whitespace. Blank lines are skipped.
    image_dir: CelebA-HQ-img, which must hold `<k>.jpg` for every listed k.

  Raises:
    ValueError: naming the file and line of a malformed count, header or row, a duplicate image, a row whose
      image is not in `image_dir`, or a count that differs from the number of rows.
  """
  lines = [(number, line.split()) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
  if len(lines) < 2:
    raise _parse_error(path, len(lines) + 1, "expected a count line and a line of attribute names")
  (count_line, count), (header_line, header) = lines[:2]
  if len(count) != 1 or not count[0].isdigit():
    raise _parse_error(path, count_line, f"expected the number of images, found {' '.join(count)!r}")
  if tuple(header) != ATTRIBUTE_NAMES:
    raise _parse_error(path, header_line, f"attribute names differ from CelebA's 40: expected {ATTRIBUTE_NAMES}, "
                       f"found {tuple(header)}")
  present = set(os.listdir(image_dir))
  attributes = {}
  for number, fields in lines[2:]:
    if len(fields) != 1 + len(ATTRIBUTE_NAMES):
      raise _parse_error(path, number, f"expected <k>.jpg and {len(ATTRIBUTE_NAMES)} values, found {len(fields)} "
                         "fields")
    name, values = fields[0], fields[1:]
    stem = name.removesuffix(".jpg")
    if not (name.endswith(".jpg") and stem.isdigit() and str(int(stem)) == stem):
      raise _parse_error(path, number, f"expected an image name <k>.jpg, found {name!r}")
    if bad := sorted(set(values) - {"1", "-1"}):
      raise _parse_error(path, number, f"attribute values must be 1 or -1, found {bad}")
    k = int(stem)
    if k in attributes:
      raise _parse_error(path, number, f"{name} is listed twice")
    if name not in present:
      raise _parse_error(path, number, f"{name} has attributes but {image_dir / name} does not exist")
    attributes[k] = np.array([value == "1" for value in values], np.uint8)
  if int(count[0]) != len(attributes):
    raise _parse_error(path, count_line, f"the count line says {count[0]} images but {len(attributes)} rows follow")
  return attributes


def official_splits(path: epath.Path, attributes: dict[int, np.ndarray]) -> dict[str, list[int]]:
  """The official split of the images in `attributes`: split name → ascending image indices.

  Args:
    path: CelebA-HQ-to-CelebA-mapping.txt, a header `idx orig_idx orig_file`, then one row per CelebA-HQ image.
    attributes: the images to split, by index.

  Raises:
    FileNotFoundError: if `path` is missing.
    ValueError: naming the file and line of a malformed header or row, or naming an image without a row.
  """
  if not path.exists():
    raise _missing(path, "mapping file, needed by the official split; split='random' does without")
  lines = [(number, line.split()) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
  if not lines or lines[0][1] != ["idx", "orig_idx", "orig_file"]:
    raise _parse_error(path, lines[0][0] if lines else 1, "expected the header 'idx orig_idx orig_file'")
  orig_index = {}
  for number, fields in lines[1:]:
    if len(fields) != 3 or not (fields[0].isdigit() and fields[1].isdigit()):
      raise _parse_error(path, number, f"expected 'idx orig_idx orig_file' with integer indices, found {fields}")
    orig_index[int(fields[0])] = int(fields[1])
  splits = {name: [] for name in SPLITS}
  for k in sorted(attributes):
    if k not in orig_index:
      raise ValueError(f"{path}: no row for image {k}.jpg")
    splits[SPLITS[int(np.searchsorted(OFFICIAL_SPLIT_STARTS, orig_index[k], side="right"))]].append(k)
  return splits


def random_splits(ids: list[int], fractions: tuple[float, float, float], seed: int) -> dict[str, list[int]]:
  """Seeded random split of `ids`: split name → ascending ids; the first two splits get round(fraction * len(ids))
  ids each, the last one the rest."""
  order = np.random.default_rng(seed).permutation(np.asarray(ids, np.int64))
  num_train, num_validation = (round(f * len(ids)) for f in fractions[:2])
  cuts = np.split(order, [num_train, num_train + num_validation])
  return {name: sorted(int(k) for k in part) for name, part in zip(SPLITS, cuts)}


def load_image(path: epath.Path, resolution: int) -> Image.Image:
  """The square RGB image at `path`, resampled with LANCZOS to `resolution`² unless it already has that size.

  Raises:
    ValueError: naming `path` if it cannot be read or decoded, or is not square.
  """
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
  except OSError as e:  # PIL's UnidentifiedImageError and truncated-file errors are OSErrors
    raise ValueError(f"{path}: cannot read the image ({e})") from e
  if image.width != image.height:
    raise ValueError(f"{path}: image is {image.width}x{image.height}, expected a square image")
  return image if image.width == resolution else image.resize((resolution,) * 2, Image.LANCZOS)


def read_mask(path: epath.Path) -> np.ndarray:
  """bool (H, W): the nonzero pixels of the part mask at `path` (grey, RGB or palette PNG).

  Raises:
    ValueError: naming `path` if it cannot be decoded.
  """
  try:
    with Image.open(path) as image:
      values = np.asarray(image if image.mode in ("1", "L") else image.convert("RGB"))
  except OSError as e:
    raise ValueError(f"{path}: cannot read the mask ({e})") from e
  return (values != 0).any(axis=-1) if values.ndim == 3 else values != 0


def compose_labels(part_files: dict[str, epath.Path], classes: str) -> np.ndarray | None:
  """uint8 (S, S) label map of one image from its part masks (S the masks' side), or None if it has none.

  Args:
    part_files: part name → its mask file, for the parts the image has.
    classes: "parts19" or "hair_skin3" (the labels of CLASS_NAMES[classes], composed as the module docstring says).

  Raises:
    ValueError: naming a mask file that cannot be decoded, is not square, or differs in size from the image's
      other masks.
  """
  labels, first = None, None
  for part in PARTS:
    if part not in part_files:
      continue
    mask = read_mask(part_files[part])
    if labels is None:
      if mask.shape[0] != mask.shape[1]:
        raise ValueError(f"{part_files[part]}: mask is {mask.shape[1]}x{mask.shape[0]}, expected a square mask")
      labels, first = np.zeros(mask.shape, np.uint8), part_files[part]
    elif mask.shape != labels.shape:
      raise ValueError(f"{part_files[part]}: mask is {mask.shape[1]}x{mask.shape[0]} but {first} is "
                       f"{labels.shape[1]}x{labels.shape[0]}")
    if classes == "parts19":
      labels[mask] = PARTS.index(part) + 1
    elif part == "hair":
      labels[mask] = 1
    elif part in SKIN_PARTS:
      labels[mask & (labels != 1)] = 2
  return labels


def resize_nearest(labels: np.ndarray, resolution: int) -> np.ndarray:
  """Nearest-neighbour resampling of a square (S, S) map to (R, R): output pixel i reads source pixel
  floor((i + 0.5) * S / R)."""
  source = (2 * np.arange(resolution) + 1) * labels.shape[0] // (2 * resolution)
  return labels[np.ix_(source, source)]


class _MaskIndex:
  """Which part masks exist per image, from one directory listing per mask folder."""

  def __init__(self, mask_dir: epath.Path, ids: list[int]):
    """Lists the mask folders `<k // 2000>` of the images `ids`.

    Raises:
      FileNotFoundError: naming the first missing folder.
    """
    self.mask_dir = mask_dir
    self.listings: dict[int, set[str]] = {}
    for k in ids:
      folder = k // IMAGES_PER_MASK_FOLDER
      if folder not in self.listings:
        if not (mask_dir / str(folder)).is_dir():
          raise _missing(mask_dir / str(folder), f"mask folder of image {k}.jpg")
        self.listings[folder] = set(os.listdir(mask_dir / str(folder)))

  def part_files(self, k: int) -> dict[str, epath.Path]:
    """Part name → mask file of image k (one of the listed images), for the parts it has."""
    folder = k // IMAGES_PER_MASK_FOLDER
    names = {part: f"{k:05d}_{part}.png" for part in PARTS}
    return {part: self.mask_dir / str(folder) / name for part, name in names.items()
            if name in self.listings[folder]}


def build(data_dir: str, config: str | CelebAMaskHQConfig = "parts19", manual_dir: str | None = None,
          **overrides) -> CelebAMaskHQ:
  """Returns the builder of `config` in `data_dir`, generating its array_record files from `manual_dir` if needed.

  config: parts19, hair_skin3 or a custom CelebAMaskHQConfig; manual_dir: the unzipped CelebAMask-HQ folder (see
  MANUAL_DOWNLOAD_INSTRUCTIONS), read only when the dataset is not prepared yet; overrides: CelebAMaskHQConfig
  fields (e.g. resolution=128, max_examples=100), appended to the config name (parts19_max_examples100_resolution128).
  See `builders.prepare`. The checks of the download raise FileNotFoundError or ValueError naming the file, and the
  line where there is one.
  """
  if manual_dir is not None:
    check_manual_dir(manual_dir)  # before tfds, whose own check of manual_dir says less
  return builders.prepare(CelebAMaskHQ, data_dir, config, manual_dir, **overrides)
