"""Numpy ray caster for indoor scenes with exact per-pixel ground truth for several dense and global tasks.

A scene is a room (a box seen from inside: floor, four walls, ceiling) holding boxes (rotated about the vertical),
spheres and capped vertical cylinders that stand on the floor, with solid textures modulating their albedo, lit by
one directional light (objects cast shadows) plus ambient light. Every pixel casts one ray through its centre and
keeps the nearest hit over all primitives, so class, instance, depth and normal are exact, and the image (one sample
per pixel, no anti-aliasing) is aligned with them pixel for pixel.

Conventions:
  World frame: metres, y up, floor at y = 0, ceiling at y = room height, room x in [-width/2, width/2] and
    z in [-length/2, length/2].
  Camera frame (OpenCV): x right, y down, z forward along the optical axis. Pinhole with square pixels, field of
    view FOV_DEGREES horizontally and vertically, principal point at the image centre. `intrinsics(resolution)`
    maps camera points to continuous pixel coordinates in which pixel (row v, column u) spans [u, u + 1) x
    [v, v + 1); its ray passes through (u + 0.5, v + 0.5).
  depth: z-depth in metres, the camera-frame z of the hit point (distance along the optical axis, not the ray
    length). Always > 0: every ray hits the room.
  normals: unit surface normals in the camera frame, facing the camera (n . ray < 0).
  edges: 1 on the boundaries between distinct surfaces: the floor, the ceiling, each wall, each face of a box, the
    side and each cap of a cylinder, each sphere. These are exactly the class boundaries, the object (instance)
    boundaries, the depth discontinuities (occlusion contours; all primitives are convex, so there are no others)
    and the creases (room corners, box edges, cylinder rims: all 90 degrees). Of the two 4-neighbours across a
    boundary, the one nearer the camera (smaller depth) is marked, both on a tie, so edges are one pixel wide.
  instances: 0 for the room, k + 1 for `SceneDescription.objects[k]`.
"""
import dataclasses
import functools
import itertools
import math
from typing import Sequence

import numpy as np

CLASS_NAMES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder")
FLOOR, WALL, CEILING = (CLASS_NAMES.index(name) for name in ("floor", "wall", "ceiling"))
OBJECT_KINDS = ("box", "sphere", "cylinder")
ATTRIBUTE_NAMES = ("has_sphere", "has_cylinder", "has_red_object", "many_objects", "light_from_left",
                   "camera_looks_down", "checkered_floor", "object_nearby")
FOV_DEGREES = 60.0
# An object (or the floor) counts as visible when it covers at least this fraction of the image (at least 1 pixel).
VISIBLE_FRACTION = 0.004
MANY_OBJECTS = 4  # many_objects: at least this many visible objects.
LOOKS_DOWN_PITCH = math.radians(-23.0)  # camera_looks_down: optical axis more than 23 degrees below horizontal.
NEARBY_DEPTH = 1.8  # object_nearby: a visible object whose centre has z-depth below this (metres).
OBJECT_COLOURS = {
    "red": (0.80, 0.07, 0.06), "orange": (0.95, 0.45, 0.05), "yellow": (0.90, 0.80, 0.10),
    "green": (0.10, 0.60, 0.15), "cyan": (0.10, 0.65, 0.75), "blue": (0.12, 0.25, 0.85),
    "purple": (0.50, 0.15, 0.70), "white": (0.90, 0.90, 0.88),
}
PATTERNS = ("plain", "checker", "stripes", "noise")
_NOISE_CELLS = 16  # value-noise lattice period, in texture periods
_EPS = 1e-6  # smallest accepted ray parameter; camera rays have t = z-depth, shadow rays unit directions


@dataclasses.dataclass(frozen=True)
class Material:
  """Albedo `rgb * (1 - contrast * pattern(x))` with a solid pattern in [0, 1] of the surface point x.

  Attributes:
    rgb: base albedo in [0, 1] (linear).
    pattern: one of PATTERNS.
    period: metres per period of the pattern.
    contrast: in [0, 1].
    offset: (3,) metres added to x before the pattern; keeps cell boundaries off faces lying on coordinate planes.
    direction: (3,) unit vector across which stripes alternate.
    seed: seed of the value-noise lattice.
  """
  rgb: tuple[float, float, float]
  pattern: str = "plain"
  period: float = 1.0
  contrast: float = 0.0
  offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
  direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
  seed: int = 0

  def albedo(self, points: np.ndarray) -> np.ndarray:
    """Albedo (3, N) in [0, 1] at texture coordinates `points` (3, N), metres."""
    x = (points + np.asarray(self.offset)[:, None]) / self.period
    if self.pattern == "plain":
      value = np.zeros(x.shape[1])
    elif self.pattern == "checker":
      value = np.floor(x).sum(axis=0) % 2
    elif self.pattern == "stripes":
      value = np.floor(np.asarray(self.direction) @ x) % 2
    else:
      value = _value_noise(x, self.seed)
    return np.asarray(self.rgb)[:, None] * (1.0 - self.contrast * value)


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """A box, sphere or capped vertical cylinder standing on the floor.

  Attributes:
    kind: one of OBJECT_KINDS.
    colour: key of OBJECT_COLOURS; `material.rgb` is that colour.
    centre: (3,) world metres, centre of the object's bounding box.
    half_extents: (3,) metres along the object's local x, y, z: box (hx, hy, hz); sphere (r, r, r);
      cylinder (r, half height, r).
    yaw: radians, rotation about the world y axis (local to world), boxes only; 0 otherwise.
    material: albedo; texture coordinates are object-local, in metres.
  """
  kind: str
  colour: str
  centre: tuple[float, float, float]
  half_extents: tuple[float, float, float]
  yaw: float
  material: Material


@dataclasses.dataclass(frozen=True)
class Camera:
  """Pinhole camera pose; intrinsics are `intrinsics(resolution)`.

  Attributes:
    position: (3,) world metres.
    yaw: radians about world y; 0 looks along +z, positive turns towards +x.
    pitch: radians, elevation of the optical axis above horizontal (negative looks down). No roll.
  """
  position: tuple[float, float, float]
  yaw: float
  pitch: float

  @property
  def rotation(self) -> np.ndarray:
    """(3, 3) camera-to-world rotation: columns are the camera x (right), y (down), z (forward) axes in world."""
    forward = np.array([math.cos(self.pitch) * math.sin(self.yaw), math.sin(self.pitch),
                        math.cos(self.pitch) * math.cos(self.yaw)])
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward], axis=1)


@dataclasses.dataclass(frozen=True)
class SceneDescription:
  """Everything needed to render a scene; independent of resolution.

  Attributes:
    room_size: (width along x, height along y, length along z), metres.
    floor, wall, ceiling: room materials (the four walls share one); texture coordinates are world metres.
    objects: the objects; object k has instance id k + 1.
    camera: the camera pose.
    light_direction: (3,) world unit vector pointing towards the directional light.
    ambient: ambient fraction of the lighting in [0, 1]; the light contributes `(1 - ambient) * max(n . l, 0)`.
  """
  room_size: tuple[float, float, float]
  floor: Material
  wall: Material
  ceiling: Material
  objects: tuple[SceneObject, ...]
  camera: Camera
  light_direction: tuple[float, float, float]
  ambient: float


@dataclasses.dataclass
class _Hits:
  """Nearest hits of N rays: parameter t (N,) (inf: miss), world normal (3, N), texture coordinates (3, N),
  primitive (N,) (0 room, k + 1 object k, -1 none) and face (N,) within the primitive (fewer than 8 faces).

  Points and vectors are stored component-first, (3, N): numpy is several times faster on it than on (N, 3).
  """
  t: np.ndarray
  normal: np.ndarray
  local: np.ndarray
  primitive: np.ndarray
  face: np.ndarray


def intrinsics(resolution: int) -> np.ndarray:
  """(3, 3) pinhole matrix K for a square image of `resolution` pixels; see the module docstring."""
  focal = 0.5 * resolution / math.tan(math.radians(FOV_DEGREES) / 2)
  centre = 0.5 * resolution
  return np.array([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])


@functools.cache
def _camera_rays(resolution: int) -> np.ndarray:
  """(3, R * R) camera-frame directions through the pixel centres, row-major, with z component 1."""
  v, u = np.mgrid[0:resolution, 0:resolution] + 0.5
  pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
  rays = np.linalg.inv(intrinsics(resolution)) @ pixels
  rays.flags.writeable = False
  return rays


def _value_noise(x: np.ndarray, seed: int) -> np.ndarray:
  """Smooth value noise (N,) in [0, 1] at points x (3, N), one lattice cell per unit, period _NOISE_CELLS."""
  lattice = np.random.default_rng(seed).uniform(size=_NOISE_CELLS**3)
  cell = np.floor(x)
  frac = x - cell
  weight = frac * frac * (3.0 - 2.0 * frac)
  lower = cell.astype(np.int64) % _NOISE_CELLS
  corners = (lower, (lower + 1) % _NOISE_CELLS)  # lattice index of the lower and upper corner, per axis
  weights = (1.0 - weight, weight)
  value = np.zeros(x.shape[1])
  for i, j, k in itertools.product((0, 1), repeat=3):
    index = (corners[i][0] * _NOISE_CELLS + corners[j][1]) * _NOISE_CELLS + corners[k][2]
    value += weights[i][0] * weights[j][1] * weights[k][2] * lattice[index]
  return value


def _yaw_matrix(yaw: float) -> np.ndarray:
  """(3, 3) rotation by `yaw` radians about the y axis (local to world)."""
  c, s = math.cos(yaw), math.sin(yaw)
  return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """numerator / denominator with inf where the denominator is 0 (ray parallel to a plane)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(denominator != 0, numerator / denominator, np.inf)


def _hit_or_zero(t: np.ndarray) -> np.ndarray:
  """Ray parameters t (N,) with misses (inf) set to 0, to compute hit points without inf * 0."""
  return np.where(np.isfinite(t), t, 0.0)


def _columns(array: np.ndarray, index: np.ndarray) -> np.ndarray:
  """array[:, index] for a per-ray array (3, N); a shared (3, 1) array unchanged."""
  return array if array.shape[1] == 1 else array[:, index]


def _intersect_room(size: np.ndarray, origins: np.ndarray, dirs: np.ndarray):
  """Exit points of rays (origins (3, N) or (3, 1) inside the room, dirs (3, N)): t (N,), normal (3, N), face (N,).

  Faces: 0 floor, 1 ceiling, 2 wall at x = -w/2, 3 at x = +w/2, 4 at z = -l/2, 5 at z = +l/2.
  """
  low = np.array([[-size[0] / 2], [0.0], [-size[2] / 2]])
  high = np.array([[size[0] / 2], [size[1]], [size[2] / 2]])
  t_axis = _safe_divide(np.where(dirs > 0, high, low) - origins, dirs)
  axis = np.argmin(t_axis, axis=0)
  columns = np.arange(dirs.shape[1])
  positive = dirs[axis, columns] > 0
  normal = np.zeros(dirs.shape)
  normal[axis, columns] = np.where(positive, -1.0, 1.0)
  face = np.array([2, 0, 4])[axis] + positive
  return t_axis[axis, columns], normal, face


def _intersect_sphere(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray):
  """Entry points of rays (3, N) into a sphere: t (N,) (inf: miss), normal, local point (3, N), face (N,) = 0."""
  radius = obj.half_extents[0]
  offset = origins - np.asarray(obj.centre)[:, None]
  a = np.sum(dirs * dirs, axis=0)
  b = np.sum(offset * dirs, axis=0)
  discriminant = b * b - a * (np.sum(offset * offset, axis=0) - radius**2)
  t = (-b - np.sqrt(np.maximum(discriminant, 0.0))) / a
  t = np.where((discriminant > 0) & (t > _EPS), t, np.inf)
  local = offset + _hit_or_zero(t) * dirs
  return t, local / radius, local, np.zeros(len(t), np.int64)


def _intersect_cylinder(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray):
  """Entry points of rays (3, N) into a capped vertical cylinder: t (N,), normal, local point (3, N), face (N,).

  Faces: 0 side, 1 top cap, 2 bottom cap.
  """
  radius, half_height = obj.half_extents[0], obj.half_extents[1]
  (ox, oy, oz), (dx, dy, dz) = origins - np.asarray(obj.centre)[:, None], dirs
  a = dx * dx + dz * dz
  b = ox * dx + oz * dz
  discriminant = b * b - a * (ox * ox + oz * oz - radius**2)
  t_side = _safe_divide(-b - np.sqrt(np.maximum(discriminant, 0.0)), a)
  t_side = np.where((discriminant > 0) & (t_side > _EPS) & (np.abs(oy + t_side * dy) <= half_height), t_side,
                    np.inf)
  candidates = [t_side]
  for cap_y in (half_height, -half_height):
    t_cap = _safe_divide(cap_y - oy, dy)
    cap_x, cap_z = ox + t_cap * dx, oz + t_cap * dz
    candidates.append(np.where((t_cap > _EPS) & (cap_x * cap_x + cap_z * cap_z <= radius**2), t_cap, np.inf))
  candidates = np.stack(candidates)
  face = np.argmin(candidates, axis=0)
  t = candidates[face, np.arange(len(face))]
  local = np.stack([ox, oy, oz]) + _hit_or_zero(t) * dirs
  normal = np.where(face == 0, local * np.array([[1.0], [0.0], [1.0]]) / radius,
                    np.array([[0.0], [1.0], [0.0]]) * np.where(face == 1, 1.0, -1.0))
  return t, normal, local, face


def _intersect_box(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray):
  """Entry points of rays (3, N) into a box rotated about y: t (N,), normal, local point (3, N), face (N,).

  Faces: 2 * local axis + (1 if the face is on the positive side).
  """
  to_world = _yaw_matrix(obj.yaw)
  start = to_world.T @ (origins - np.asarray(obj.centre)[:, None])
  step = to_world.T @ dirs
  half = np.asarray(obj.half_extents)[:, None]
  t_low, t_high = _safe_divide(-half - start, step), _safe_divide(half - start, step)
  # A ray parallel to a slab stays inside it (enters at -inf) or never reaches it (enters at +inf: a miss).
  t_low = np.where(step == 0, np.where(np.abs(start) <= half, -np.inf, np.inf), t_low)
  t_high = np.where(step == 0, np.inf, t_high)
  t_enter = np.minimum(t_low, t_high)
  t_exit = np.maximum(t_low, t_high).min(axis=0)
  axis = np.argmax(t_enter, axis=0)
  columns = np.arange(len(axis))
  t = t_enter[axis, columns]
  t = np.where((t <= t_exit) & (t > _EPS), t, np.inf)
  positive = np.broadcast_to(step, t_enter.shape)[axis, columns] < 0
  local_normal = np.zeros(t_enter.shape)
  local_normal[axis, columns] = np.where(positive, 1.0, -1.0)
  return t, to_world @ local_normal, start + _hit_or_zero(t) * step, 2 * axis + positive


_INTERSECTORS = {"box": _intersect_box, "sphere": _intersect_sphere, "cylinder": _intersect_cylinder}


def _cast(scene: SceneDescription, origins: np.ndarray, dirs: np.ndarray, with_room: bool) -> _Hits:
  """Nearest hits of rays over the objects, and the room (texture coordinates: world) if `with_room`.

  Args:
    scene: the scene.
    origins, dirs: (3, N) ray origins and directions (metres); either may be (3, 1), shared by all rays (camera
      rays share their origin, shadow rays their direction).
    with_room: whether to intersect the room (origins must be inside it).
  """
  n = np.broadcast_shapes(origins.shape, dirs.shape)[1]
  # Terms of the bounding-sphere test below that do not depend on the object (o: origin, d: direction), so that
  # each object costs two matrix-vector products and a few elementwise operations.
  dd, od, oo = np.sum(dirs * dirs, axis=0), np.sum(origins * dirs, axis=0), np.sum(origins * origins, axis=0)
  hits = _Hits(np.full(n, np.inf), np.zeros((3, n)), np.zeros((3, n)), np.full(n, -1), np.zeros(n, np.int64))
  if with_room:
    hits.t, hits.normal, hits.face = _intersect_room(np.asarray(scene.room_size), origins, dirs)
    hits.local = origins + hits.t * dirs
    hits.primitive[:] = 0
  for k, obj in enumerate(scene.objects):
    # Exact intersection only for the rays that meet the object's bounding sphere (centre p, radius inflated
    # against rounding) ahead of their origin: with b = (o - p).d and c = |o - p|^2 - radius^2, the line meets it
    # (b^2 > dd c) and the far root is positive (b < 0 or c < 0).
    centre = np.asarray(obj.centre)
    b = od - centre @ dirs
    c = oo - 2.0 * (centre @ origins) + centre @ centre - (1.01 * math.hypot(*obj.half_extents))**2
    rays = np.flatnonzero((b * b > dd * c) & ((b < 0) | (c < 0)))
    if rays.size == 0:
      continue
    t, normal, local, face = _INTERSECTORS[obj.kind](obj, _columns(origins, rays), _columns(dirs, rays))
    closer = t < hits.t[rays]
    index = rays[closer]
    hits.t[index], hits.normal[:, index], hits.local[:, index] = t[closer], normal[:, closer], local[:, closer]
    hits.primitive[index], hits.face[index] = k + 1, face[closer]
  return hits


def render(scene: SceneDescription, resolution: int) -> dict[str, np.ndarray]:
  """Ray-casts `scene` into a square image with ground truth (conventions in the module docstring).

  Returns:
    image: uint8 (R, R, 3), sRGB (gamma 2.2).
    segmentation: uint8 (R, R), index into CLASS_NAMES.
    instances: uint8 (R, R), 0 room, k + 1 object k.
    depth: float32 (R, R), z-depth in metres.
    normals: float32 (R, R, 3), unit, camera frame (x right, y down, z forward), facing the camera.
    edges: uint8 (R, R) in {0, 1}.
  """
  rotation = scene.camera.rotation
  dirs = rotation @ _camera_rays(resolution)  # camera-frame z component 1, so the ray parameter t is the z-depth
  origins = np.asarray(scene.camera.position)[:, None]
  hits = _cast(scene, origins, dirs, with_room=True)

  room = hits.primitive == 0
  classes = np.where(hits.face == 0, FLOOR, np.where(hits.face == 1, CEILING, WALL))
  object_classes = np.array([CLASS_NAMES.index(obj.kind) for obj in scene.objects], np.int64)
  classes[~room] = object_classes[hits.primitive[~room] - 1]

  albedo = np.zeros(dirs.shape)
  surfaces = [(room & (classes == c), m) for c, m in ((FLOOR, scene.floor), (WALL, scene.wall),
                                                       (CEILING, scene.ceiling))]
  surfaces += [(hits.primitive == k + 1, obj.material) for k, obj in enumerate(scene.objects)]
  for mask, material in surfaces:
    albedo[:, mask] = material.albedo(hits.local[:, mask])

  light = np.asarray(scene.light_direction)
  direct = np.maximum(light @ hits.normal, 0.0)
  lit = np.flatnonzero(direct > 0)
  points = origins + hits.t[lit] * dirs[:, lit] + 1e-4 * hits.normal[:, lit]  # 0.1 mm off their own surface
  shadow = _cast(scene, points, light[:, None], with_room=False)
  direct[lit[np.isfinite(shadow.t)]] = 0.0
  radiance = albedo * (scene.ambient + (1.0 - scene.ambient) * direct)
  image = np.round(255.0 * np.clip(radiance, 0.0, 1.0)**(1 / 2.2)).astype(np.uint8)

  shape = (resolution, resolution)
  depth = hits.t.reshape(shape)
  surface_ids = (hits.primitive * 8 + hits.face).reshape(shape)
  return {
      "image": image.T.reshape(shape + (3,)),
      "segmentation": classes.reshape(shape).astype(np.uint8),
      "instances": hits.primitive.reshape(shape).astype(np.uint8),
      "depth": depth.astype(np.float32),
      "normals": (rotation.T @ hits.normal).T.reshape(shape + (3,)).astype(np.float32),
      "edges": _edges(surface_ids, depth),
  }


def _edges(surface_ids: np.ndarray, depth: np.ndarray) -> np.ndarray:
  """uint8 (R, R): marks the nearer pixel (both on a tie) of each 4-neighbour pair on different surfaces."""
  edges = np.zeros(depth.shape, bool)
  for ids, z, marks in ((surface_ids, depth, edges), (surface_ids.T, depth.T, edges.T)):
    change = ids[1:] != ids[:-1]
    marks[:-1] |= change & (z[:-1] <= z[1:])
    marks[1:] |= change & (z[1:] <= z[:-1])
  return edges.astype(np.uint8)


def visible_objects(scene: SceneDescription, instances: np.ndarray) -> list[SceneObject]:
  """Objects covering at least VISIBLE_FRACTION of `instances` (R, R) (and at least one pixel)."""
  min_pixels = max(1, math.ceil(VISIBLE_FRACTION * instances.size))
  counts = np.bincount(instances.ravel(), minlength=len(scene.objects) + 1)[1:]
  return [obj for obj, count in zip(scene.objects, counts) if count >= min_pixels]


def attributes(scene: SceneDescription, segmentation: np.ndarray, instances: np.ndarray) -> np.ndarray:
  """uint8 (len(ATTRIBUTE_NAMES),) binary attributes of a rendered scene.

  Object attributes count visible objects only (see `visible_objects`), so they can be read off the image.
  light_from_left: the light direction has negative x in the camera frame. checkered_floor: the floor is visible
  (as for objects) and has the checker pattern. object_nearby: a visible object's centre has z-depth below
  NEARBY_DEPTH metres.
  """
  visible = visible_objects(scene, instances)
  rotation = scene.camera.rotation
  position = np.asarray(scene.camera.position)
  floor_visible = np.sum(segmentation == FLOOR) >= max(1, math.ceil(VISIBLE_FRACTION * segmentation.size))
  values = {
      "has_sphere": any(obj.kind == "sphere" for obj in visible),
      "has_cylinder": any(obj.kind == "cylinder" for obj in visible),
      "has_red_object": any(obj.colour == "red" for obj in visible),
      "many_objects": len(visible) >= MANY_OBJECTS,
      "light_from_left": (np.asarray(scene.light_direction) @ rotation)[0] < 0,
      "camera_looks_down": scene.camera.pitch < LOOKS_DOWN_PITCH,
      "checkered_floor": floor_visible and scene.floor.pattern == "checker",
      "object_nearby": any(((np.asarray(obj.centre) - position) @ rotation)[2] < NEARBY_DEPTH for obj in visible),
  }
  return np.array([values[name] for name in ATTRIBUTE_NAMES], np.uint8)


def _random_material(rng: np.random.Generator, rgb, patterns: Sequence[str], probabilities: Sequence[float],
                     period: tuple[float, float], contrast: tuple[float, float]) -> Material:
  """A material of colour `rgb` with a pattern drawn from `patterns`, period and contrast uniform in the ranges."""
  # searchsorted on the cumulative probabilities: rng.choice(p=...) costs ~40 us, most of a scene's sampling.
  pattern = patterns[int(np.searchsorted(np.cumsum(probabilities), rng.uniform(0.0, sum(probabilities))))]
  period_value = rng.uniform(*period)
  direction = rng.normal(size=3)
  return Material(rgb=tuple(float(c) for c in rgb), pattern=pattern, period=period_value,
                  contrast=rng.uniform(*contrast), offset=tuple(rng.uniform(0.0, period_value, 3)),
                  direction=tuple(direction / math.sqrt(direction @ direction)), seed=int(rng.integers(2**31)))


def _pale_colour(rng: np.random.Generator, value: tuple[float, float], saturation: tuple[float, float]):
  """(3,) rgb: a random hue mixed with white, brightness and saturation uniform in the ranges."""
  hue = rng.uniform(0.0, 1.0, 3)
  return rng.uniform(*value) * (1.0 - rng.uniform(*saturation) * hue / hue.max())


def _footprint(kind: str, half_extents: np.ndarray) -> float:
  """Radius (metres) of a vertical cylinder around the object's centre that contains it."""
  return float(np.hypot(half_extents[0], half_extents[2]) if kind == "box" else half_extents[0])


def sample_scene(rng: np.random.Generator) -> SceneDescription:
  """Draws a random room, 3 to 8 non-overlapping objects, a camera aimed roughly at their centroid, a light."""
  width, length = rng.uniform(3.5, 6.5, 2)
  height = rng.uniform(2.4, 3.0)
  # The camera stands 0.4 to 1.2 m in front of a random wall, so that most objects are ahead of it.
  half_room = np.array([width, length]) / 2
  axis = rng.integers(2)
  camera_xz = rng.uniform(-1.0, 1.0, 2) * (half_room - 0.5)
  camera_xz[axis] = (2 * rng.integers(2) - 1) * (half_room[axis] - rng.uniform(0.4, 1.2))
  camera_height = rng.uniform(1.0, 1.8)

  objects = []
  # Footprint circles (centre, radius) that a new object's footprint must clear by 5 cm; the camera's keeps every
  # object 0.8 m away.
  taken_xz, taken_radius = [camera_xz], [0.75]
  for _ in range(rng.integers(3, 9)):
    kind = OBJECT_KINDS[rng.integers(len(OBJECT_KINDS))]
    if kind == "sphere":
      half = np.full(3, rng.uniform(0.2, 0.55))
    elif kind == "cylinder":
      radius = rng.uniform(0.15, 0.45)
      half = np.array([radius, rng.uniform(0.2, 0.8), radius])
    else:
      half = np.array([rng.uniform(0.15, 0.55), rng.uniform(0.15, 0.7), rng.uniform(0.15, 0.55)])
    footprint = _footprint(kind, half)
    half_range = np.array([width, length]) / 2 - footprint - 0.05
    xz = rng.uniform(-half_range, half_range, (20, 2))
    distance = np.linalg.norm(xz[:, None] - np.array(taken_xz), axis=2)
    clear = np.all(distance > footprint + np.array(taken_radius) + 0.05, axis=1)
    if not clear.any():
      continue
    xz = xz[np.argmax(clear)]
    colour = list(OBJECT_COLOURS)[rng.integers(len(OBJECT_COLOURS))]
    material = _random_material(rng, OBJECT_COLOURS[colour], PATTERNS, (0.4, 0.2, 0.2, 0.2), (0.08, 0.35),
                                (0.2, 0.45))
    objects.append(SceneObject(kind=kind, colour=colour, centre=(float(xz[0]), float(half[1]), float(xz[1])),
                               half_extents=tuple(float(h) for h in half),
                               yaw=float(rng.uniform(0.0, np.pi / 2)) if kind == "box" else 0.0,
                               material=material))
    taken_xz.append(xz)
    taken_radius.append(footprint)

  position = np.array([camera_xz[0], camera_height, camera_xz[1]])
  target = np.mean([obj.centre for obj in objects], axis=0) if objects else np.array([0.0, 0.5, 0.0])
  to_target = target - position
  yaw = math.atan2(to_target[0], to_target[2]) + rng.normal(0.0, math.radians(15.0))
  pitch = math.atan2(to_target[1], math.hypot(to_target[0], to_target[2])) + rng.uniform(-0.2, 0.2)
  camera = Camera(position=tuple(float(p) for p in position), yaw=yaw,
                  pitch=float(np.clip(pitch, math.radians(-50.0), math.radians(5.0))))

  elevation, azimuth = rng.uniform(math.radians(25.0), math.radians(70.0)), rng.uniform(0.0, 2 * np.pi)
  light = (math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth))
  floor = _random_material(rng, _pale_colour(rng, (0.35, 0.7), (0.2, 0.6)), ("plain", "checker", "noise"),
                           (0.25, 0.45, 0.3), (0.3, 0.9), (0.25, 0.5))
  wall = _random_material(rng, _pale_colour(rng, (0.6, 0.9), (0.05, 0.35)), ("plain", "stripes", "noise"),
                          (0.4, 0.3, 0.3), (0.2, 0.8), (0.1, 0.3))
  ceiling = Material(rgb=tuple(float(c) for c in _pale_colour(rng, (0.8, 0.95), (0.0, 0.1))))
  return SceneDescription(room_size=(float(width), float(height), float(length)), floor=floor, wall=wall,
                          ceiling=ceiling, objects=tuple(objects), camera=camera, light_direction=light,
                          ambient=float(rng.uniform(0.25, 0.45)))


def render_scene(seed: int | Sequence[int], resolution: int) -> tuple[dict[str, np.ndarray], SceneDescription]:
  """Samples the scene of `seed` (an int or a sequence of ints for np.random.SeedSequence) and renders it.

  Returns:
    The example (`render`'s maps plus "attributes": uint8 (len(ATTRIBUTE_NAMES),)) and its SceneDescription.
    The scene does not depend on `resolution`.
  """
  scene = sample_scene(np.random.default_rng(seed))
  example = render(scene, resolution)
  example["attributes"] = attributes(scene, example["segmentation"], example["instances"])
  return example, scene
