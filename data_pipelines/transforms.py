"""Resizing, cropping and training augmentation of raw examples, in numpy.

Every transform maps a raw example (a dict in the layout of `episodes`' module docstring; any subset of the
features) to a new dict in the same layout, leaving its input untouched. Arrays with at least two axes are maps,
(H, W, ...), resampled by feature name:
  image            uint8 (H, W, 3): bilinear (a triangle filter widened by the scale factor when downsampling, i.e.
                   antialiased), rounded and clipped back to uint8.
  depth            float32 (H, W) metres, 0 = invalid: the same filter averaged over valid pixels only, so invalid
                   pixels never pull valid ones towards 0; an output pixel with no valid pixel under its filter is 0.
  normals          float32 (H, W, 3), zero vector = invalid: the valid-weighted average direction, renormalised to
                   unit length; zero where no valid pixel is under the filter.
  anything else    (segmentation, edges, instances, ...): nearest neighbour, so only the input's values (and its
                   void label) appear in the output.
Arrays with fewer axes (attributes) pass through. Maps may differ in resolution (e.g. an image at twice its labels'
resolution) but must show the same field of view: a crop window is chosen on the image (without an image, on the
first map in key order) as fractions of its extent and applied to every map at its own resolution.

Geometry: pixel (row v, column u) covers [v, v + 1) x [u, u + 1); an output pixel samples the source at its centre.
Conventions of the training augmentation:
  zoom: `scale_crop` with zoom s >= 1 shows 1/s of the field of view of `fit` (the eval view), magnified s times.
    At fixed intrinsics an object's apparent size is inversely proportional to its depth, so depth is divided by s
    (zooming in by s shows the scene as if s times closer; MTAN/LibMTL's RandomScaleCrop does the same). Normals,
    camera-frame directions, are unchanged by zooming; resizing and `fit` change neither.
  flip: mirroring the image mirrors the scene in the camera frame's x axis (x points right), so every map is
    mirrored and the normals' x component is negated.
  colour jitter changes the image only.
"""
import dataclasses
import math
from typing import Any, Mapping

import numpy as np

Example = Mapping[str, np.ndarray]
# Rec. 601 luma weights: the grey level of an RGB pixel, for contrast and saturation.
_LUMA = np.float32([0.299, 0.587, 0.114])
# RGB -> YIQ; hue jitter rotates the chroma plane (I, Q) about the luma axis.
_YIQ = np.float64([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INVERSE = np.linalg.inv(_YIQ)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
  height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
  if height < 1 or width < 1:
    raise ValueError(f"output size must be positive, got {size}")
  return height, width


def _maps(example: Example) -> list[str]:
  return sorted(key for key, value in example.items() if np.ndim(value) >= 2)


def _reference_shape(example: Example) -> tuple[int, int]:
  """(H, W) of the map the crop window is chosen on: the image, else the first map in key order."""
  maps = _maps(example)
  if not maps:
    raise ValueError(f"the example has no map to resize (features {sorted(example)})")
  return np.shape(example["image" if "image" in example else maps[0]])[:2]


def _nearest_index(out_len: int, in_len: int, start: float, extent: float) -> np.ndarray:
  """int (out_len,): the source pixel under each output pixel's centre, for the window [start, start + extent)
  (source pixels) spread over out_len output pixels."""
  centres = start + (np.arange(out_len) + 0.5) * (extent / out_len)
  return np.clip(np.floor(centres).astype(np.int64), 0, in_len - 1)


def _linear_taps(out_len: int, in_len: int, start: float, extent: float) -> tuple[np.ndarray, np.ndarray]:
  """(indices int (out_len, K), weights float32 (out_len, K)) of the triangle filter, of radius max(1, extent /
  out_len) source pixels (antialiasing when downsampling), for the window [start, start + extent); the weights of
  each output pixel are zero outside the source and sum to 1."""
  step = extent / out_len
  radius = max(1.0, step)
  centres = start + (np.arange(out_len) + 0.5) * step - 0.5  # in the index space where pixel j is centred at j
  first = np.floor(centres - radius).astype(np.int64) + 1
  indices = first[:, None] + np.arange(math.ceil(2 * radius) + 1)
  weights = np.maximum(0.0, 1.0 - np.abs(indices - centres[:, None]) / radius)
  weights[(indices < 0) | (indices >= in_len)] = 0.0
  weights /= weights.sum(axis=1, keepdims=True)
  return np.clip(indices, 0, in_len - 1), weights.astype(np.float32)


def _filter(values: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray]):
  """float32 (H, W) or (H, W, C) -> (H', W'[, C]): the separable weighted sum of `rows`' and `cols`' taps."""
  if values.ndim == 3:  # channel by channel: gathering contiguous planes is about twice as fast
    return np.stack([_filter(np.ascontiguousarray(values[..., c]), rows, cols) for c in range(values.shape[2])],
                    axis=-1)
  (row_index, row_weight), (col_index, col_weight) = rows, cols
  values = sum(row_weight[:, k, None] * values[row_index[:, k]] for k in range(row_index.shape[1]))
  return sum(col_weight[:, k] * values[:, col_index[:, k]] for k in range(col_index.shape[1]))


def _resample(key: str, value: np.ndarray, size: tuple[int, int], window: tuple[float, float, float, float]):
  """One map resampled to `size` from `window` = (top, left, height, width), fractions of its extent."""
  height, width = value.shape[:2]
  top, left, window_height, window_width = window
  row_window = (top * height, window_height * height)
  col_window = (left * width, window_width * width)
  if key not in ("image", "depth", "normals"):
    return value[np.ix_(_nearest_index(size[0], height, *row_window), _nearest_index(size[1], width, *col_window))]
  rows = _linear_taps(size[0], height, *row_window)
  cols = _linear_taps(size[1], width, *col_window)
  if key == "image":
    return np.clip(np.rint(_filter(value.astype(np.float32), rows, cols)), 0, 255).astype(np.uint8)
  if key == "depth":
    valid = value > 0
    total = _filter(np.where(valid, value, 0).astype(np.float32), rows, cols)
    weight = _filter(valid.astype(np.float32), rows, cols)
    return np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
  # Normals: valid pixels are unit vectors and invalid ones zero, so the plain filtered sum is the valid-weighted
  # sum, whose direction is the average's; it is zero exactly when no valid pixel is under the filter.
  total = _filter(value.astype(np.float32), rows, cols)
  norm = np.sqrt(np.sum(total * total, axis=-1, keepdims=True))
  return np.divide(total, norm, out=np.zeros_like(total), where=norm > 0)


def _warp(example: Example, size: int | tuple[int, int], window: tuple[float, float, float, float],
          depth_divisor: float = 1.0) -> dict[str, np.ndarray]:
  size = _pair(size)
  out = dict(example)
  for key in _maps(example):
    out[key] = _resample(key, np.asarray(example[key]), size, window)
  if "depth" in out and depth_divisor != 1.0:
    out["depth"] = out["depth"] / np.float32(depth_divisor)
  return out


def resize(example: Example, size: int | tuple[int, int]) -> dict[str, np.ndarray]:
  """Every map stretched to size = (H', W') (an int: square), whatever its aspect ratio; depth values unchanged."""
  return _warp(example, size, (0.0, 0.0, 1.0, 1.0))


def scale_crop(example: Example, size: int | tuple[int, int], scale: float,
               position: tuple[float, float] = (0.5, 0.5)) -> dict[str, np.ndarray]:
  """A size = (H', W') crop zoomed `scale` times into the largest window of the output's aspect ratio.

  Args:
    example: raw example.
    size: output (H', W'), pixels (an int: square).
    scale: zoom s >= 1 relative to `fit`: the crop window is 1/s of the largest window of aspect H':W' that fits in
      the image. Depth is divided by s (module docstring).
    position: (vertical, horizontal) place of the window in the room left around it, each in [0, 1]: 0 = top
      (left) edge, 0.5 = centred, 1 = bottom (right) edge.

  Returns:
    The example with every map of shape (H', W', ...).
  """
  if scale < 1:
    raise ValueError(f"zoom scale must be >= 1 (the crop window must lie in the image), got {scale}")
  if not all(0 <= p <= 1 for p in position):
    raise ValueError(f"crop position {position} must lie in [0, 1]²")
  out_height, out_width = _pair(size)
  height, width = _reference_shape(example)
  pixels_per_source_pixel = scale * max(out_height / height, out_width / width)
  window_height = out_height / pixels_per_source_pixel / height
  window_width = out_width / pixels_per_source_pixel / width
  window = ((1 - window_height) * position[0], (1 - window_width) * position[1], window_height, window_width)
  return _warp(example, (out_height, out_width), window, depth_divisor=scale)


def fit(example: Example, size: int | tuple[int, int]) -> dict[str, np.ndarray]:
  """The eval view: scales the image so that it just covers size = (H', W') and crops the centre."""
  return scale_crop(example, size, 1.0)


def hflip(example: Example) -> dict[str, np.ndarray]:
  """Every map mirrored left-right and the normals' x component negated (flipping twice is the identity)."""
  out = {key: value[:, ::-1] if np.ndim(value) >= 2 else value for key, value in example.items()}
  if "normals" in out:
    out["normals"] = out["normals"] * np.float32([-1, 1, 1])
  return out


def color_jitter(example: Example, rng: np.random.Generator, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, hue: float = 0.0) -> dict[str, np.ndarray]:
  """Random photometric changes of the image (uint8 (H, W, 3)); every other feature passes through.

  In this order: brightness scales the image by b, contrast blends it with its mean grey level by c, saturation
  blends each pixel with its own grey level by s (b, c, s drawn uniformly from [1 - strength, 1 + strength]), and
  hue rotates the colours about the grey axis by a turn fraction drawn from [-hue, hue]. The result is rounded and
  clipped to uint8. All strengths 0, or no image: the example is returned as is, and `rng` is not used.
  """
  if "image" not in example or not (brightness or contrast or saturation or hue):
    return dict(example)
  b, c, s = (rng.uniform(1 - strength, 1 + strength) for strength in (brightness, contrast, saturation))
  angle = 2 * np.pi * rng.uniform(-hue, hue)
  rotation = np.float64([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
  hue_matrix = _YIQ_INVERSE @ rotation @ _YIQ
  saturation_matrix = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _LUMA)
  # All four steps are affine in RGB: one matrix and one offset, applied in a single pass.
  colour = hue_matrix @ saturation_matrix
  image = example["image"].astype(np.float32)
  mean_grey = float(np.mean(image @ _LUMA))
  matrix = (c * b * colour).astype(np.float32)
  offset = ((1 - c) * b * mean_grey * colour.sum(axis=1)).astype(np.float32)
  return {**example, "image": np.clip(np.rint(image @ matrix.T + offset), 0, 255).astype(np.uint8)}


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
  """Training augmentation. size: output (H, W), pixels. scale: (min, max) zoom, min >= 1, drawn uniformly (see
  `scale_crop`). flip: probability of a horizontal flip. brightness, contrast, saturation, hue: colour jitter
  strengths (see `color_jitter`), each in [0, 1] (hue in [0, 0.5]). With the defaults, `augment` is `fit` but for
  the crop's place along the longer side, which is random."""
  size: tuple[int, int]
  scale: tuple[float, float] = (1.0, 1.0)
  flip: float = 0.0
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  hue: float = 0.0

  def __post_init__(self):
    object.__setattr__(self, "size", _pair(self.size))
    object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))
    if not 1 <= self.scale[0] <= self.scale[1]:
      raise ValueError(f"augmentation scale {self.scale} must be (min, max) with 1 <= min <= max")
    if not 0 <= self.flip <= 1:
      raise ValueError(f"augmentation flip={self.flip} is a probability, in [0, 1]")
    for name in ("brightness", "contrast", "saturation"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"augmentation {name}={getattr(self, name)} must lie in [0, 1]")
    if not 0 <= self.hue <= 0.5:
      raise ValueError(f"augmentation hue={self.hue} (a fraction of a turn) must lie in [0, 0.5]")

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None) -> "AugmentOptions | None":
    """Options from a config section with the field names as keys (size required; an int is a square) and an
    optional `enabled` (default True); None or enabled=False gives None, no augmentation."""
    if config is None:
      return None
    config = dict(config)
    if not config.pop("enabled", True):
      return None
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
      raise ValueError(f"unknown augmentation options {unknown}; known: {sorted(fields)} and `enabled`")
    if "size" not in config:
      raise ValueError("augmentation options need `size`, the output (H, W) or side")
    return cls(**config)


def augment(example: Example, rng: np.random.Generator, options: AugmentOptions | None) -> dict[str, np.ndarray]:
  """A random zoomed crop (zoom uniform in options.scale, window placed uniformly), flipped with probability
  options.flip, then colour-jittered; options None: the example unchanged (the eval path). Pure in (example, rng
  state): the same seed gives bitwise the same output."""
  if options is None:
    return dict(example)
  scale = rng.uniform(*options.scale)
  position = rng.uniform(size=2)
  flip = rng.random() < options.flip
  out = scale_crop(example, options.size, scale, (float(position[0]), float(position[1])))
  if flip:
    out = hflip(out)
  return color_jitter(out, rng, options.brightness, options.contrast, options.saturation, options.hue)
