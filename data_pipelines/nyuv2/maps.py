"""Resizing one NYU-v2 example's maps, and deriving the normals and edges that a layout lacks.

Maps follow the shared layout (data_pipelines/episodes.py): image uint8 (H, W, 3); segmentation uint8 (H, W),
255 = void; depth float32 (H, W) metres, 0 = invalid; normals float32 (H, W, 3) unit or zero (= invalid); edges
uint8 (H, W) {0, 1}.

Resizing to (H', W') works one axis at a time. Downsampling an axis partitions the source pixels into consecutive
blocks, block i holding source rows floor(i H / H') to floor((i + 1) H / H') - 1; upsampling repeats the nearest
source pixel, floor((i + 1/2) H / H'). Per map:
  image: PIL bilinear (antialiased when downsampling).
  segmentation: the nearest source pixel (a pixel near the block's centre when downsampling), so labels stay in
    the label set and void stays void.
  depth: mean over the block's valid pixels; 0 where the block has none.
  normals: mean of the block's valid normals, renormalised; zero where the block has none or where the mean is
    shorter than MIN_NORM (the normals disagree, e.g. across a sharp crease).
  edges: 1 where any pixel of the block is an edge, so thin edges survive downsampling.

Derived maps, computed at the stored resolution (after resizing):
  normals_from_depth: each pixel (row v, column u, 0-based, centre at (u, v)) is back-projected with the NYU
    Kinect colour-camera intrinsics (NYU_INTRINSICS, at 640 x 480) scaled to the map's size:
    P = depth * ((u - cx) / fx, (v - cy) / fy, 1), in the camera frame x right, y down, z forward (metres).
    The normal is the cross product of the central differences P[v+1, u] - P[v-1, u] and P[v, u+1] - P[v, u-1],
    normalised, which faces the camera (n . P < 0) on any visible surface. Invalid (zero) on the image border
    and where the pixel's depth or any of its four neighbours' is invalid.
  edges_from_labels_and_depth: a pair of 4-neighbours lies on a boundary when their labels differ (void counts as
    a label: NYU's unlabelled pixels mostly fill the gaps between objects) or when both depths are valid and differ
    by more than DEPTH_JUMP times the smaller one. Of the pair, the pixel nearer the camera is marked (both on a
    tie; an invalid depth counts as farthest), so edges are one pixel wide, as in synthetic_scenes.
"""
import numpy as np
from PIL import Image

# fx, fy, cx, cy in pixels of the 640 x 480 colour image (NYU Depth v2 toolbox, camera_params.m).
NYU_INTRINSICS = (518.857901, 519.469611, 325.582449, 253.736166)
NYU_SIZE = (480, 640)  # (H, W) the intrinsics refer to
MIN_NORM = 0.5  # shorter (mean or decoded) normals are invalid; unit normals with JPEG noise are ~1 +- 0.05 long
DEPTH_JUMP = 0.1  # relative depth step between 4-neighbours that counts as a discontinuity (occlusion contour)


def unit_normals(normals: np.ndarray) -> np.ndarray:
  """float (..., 3) → float32 (..., 3): vectors at least MIN_NORM long normalised, others (and NaN) zero."""
  normals = np.asarray(normals, np.float64)
  norm = np.linalg.norm(normals, axis=-1, keepdims=True)
  valid = np.isfinite(norm) & (norm >= MIN_NORM)
  return np.where(valid, normals / np.where(valid, norm, 1.0), 0.0).astype(np.float32)


def _resample(x: np.ndarray, shape: tuple[int, int], reduce: bool) -> np.ndarray:
  """Resamples axes 0 and 1 of `x` to `shape`: block sums when downsampling with `reduce`, else nearest pixels."""
  for axis, size in enumerate(shape):
    old = x.shape[axis]
    if size == old:
      continue
    if size > old or not reduce:
      x = np.take(x, (2 * np.arange(size) + 1) * old // (2 * size), axis=axis)
    else:
      x = np.add.reduceat(x, np.arange(size) * old // size, axis=axis)
  return x


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """uint8 (H, W, 3) → uint8 (H', W', 3), PIL bilinear."""
  return np.asarray(Image.fromarray(image).resize(shape[::-1], Image.Resampling.BILINEAR))


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """(H, W) → (H', W'), nearest pixel; for segmentation labels."""
  return _resample(labels, shape, reduce=False)


def resize_depth(depth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """float32 (H, W) metres, 0 = invalid → float32 (H', W'): block means over valid pixels."""
  valid = depth > 0
  total = _resample(np.where(valid, depth, 0).astype(np.float64), shape, reduce=True)
  count = _resample(valid.astype(np.int64), shape, reduce=True)
  return np.where(count > 0, total / np.maximum(count, 1), 0).astype(np.float32)


def resize_normals(normals: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """float32 (H, W, 3) unit or zero → float32 (H', W', 3): renormalised block means over valid normals."""
  valid = np.any(normals != 0, axis=-1)
  total = _resample(normals.astype(np.float64), shape, reduce=True)
  count = _resample(valid.astype(np.int64), shape, reduce=True)
  return unit_normals(total / np.maximum(count, 1)[..., None])


def resize_edges(edges: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """uint8 (H, W) {0, 1} → uint8 (H', W'): 1 where any pixel of the block is an edge."""
  return (_resample(edges.astype(np.int64), shape, reduce=True) > 0).astype(np.uint8)


def intrinsics(shape: tuple[int, int]) -> tuple[float, float, float, float]:
  """(fx, fy, cx, cy), pixels, of NYU_INTRINSICS scaled from 640 x 480 to `shape` (H, W), pixel centres kept."""
  fx, fy, cx, cy = NYU_INTRINSICS
  sy, sx = shape[0] / NYU_SIZE[0], shape[1] / NYU_SIZE[1]
  return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


def normals_from_depth(depth: np.ndarray) -> np.ndarray:
  """float32 (H, W) metres, 0 = invalid → float32 (H, W, 3) unit camera-frame normals, zero = invalid."""
  height, width = depth.shape
  fx, fy, cx, cy = intrinsics(depth.shape)
  v, u = np.mgrid[0:height, 0:width]
  depth = depth.astype(np.float64)
  points = depth[..., None] * np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(depth)], axis=-1)
  cross = np.cross(points[2:, 1:-1] - points[:-2, 1:-1], points[1:-1, 2:] - points[1:-1, :-2])
  norm = np.linalg.norm(cross, axis=-1, keepdims=True)
  valid = ((norm > 0) & (depth[1:-1, 1:-1, None] > 0) & (depth[2:, 1:-1, None] > 0) & (depth[:-2, 1:-1, None] > 0)
           & (depth[1:-1, 2:, None] > 0) & (depth[1:-1, :-2, None] > 0))
  normals = np.zeros((height, width, 3), np.float32)
  normals[1:-1, 1:-1] = np.where(valid, cross / np.where(valid, norm, 1.0), 0.0)
  return normals


def edges_from_labels_and_depth(segmentation: np.ndarray, depth: np.ndarray) -> np.ndarray:
  """uint8 (H, W) labels and float32 (H, W) depth (0 = invalid) → uint8 (H, W) {0, 1} boundaries (see above)."""
  near = np.where(depth > 0, depth, np.inf)
  edges = np.zeros(depth.shape, bool)
  for a, b in ((np.s_[:-1], np.s_[1:]), (np.s_[:, :-1], np.s_[:, 1:])):
    valid = (depth[a] > 0) & (depth[b] > 0)
    jump = valid & (np.abs(depth[a] - depth[b]) > DEPTH_JUMP * np.minimum(depth[a], depth[b]))
    boundary = (segmentation[a] != segmentation[b]) | jump
    edges[a] |= boundary & (near[a] <= near[b])
    edges[b] |= boundary & (near[b] <= near[a])
  return edges.astype(np.uint8)
