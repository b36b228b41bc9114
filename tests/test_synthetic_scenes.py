"""synthetic_scenes: ground truth checked against geometry recomputed here, and the tfds build read back.

The geometric checks back-project the stored depth with the intrinsics and test the points and normals against
the scene description (planes, spheres, cylinders, boxes), so a wrong convention (ray length instead of z-depth,
world instead of camera normals, a flipped axis) fails them.
"""
import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from data_pipelines.synthetic_scenes import SyntheticScenes, SyntheticScenesConfig, build, render

RESOLUTION = 40
NUM_SCENES = 16
TOL = 1e-4  # metres; float32 depth of at most ~10 m is exact to ~1e-6 m


@pytest.fixture(scope="module")
def scenes():
  """(example, SceneDescription) pairs rendered at RESOLUTION."""
  return [render.render_scene((7, 0, i), RESOLUTION) for i in range(NUM_SCENES)]


def _camera_points(depth: np.ndarray) -> np.ndarray:
  """Camera-frame points (R, R, 3), metres, of a z-depth map (R, R): depth * K^-1 (u + 0.5, v + 0.5, 1)."""
  size = depth.shape[0]
  v, u = np.mgrid[0:size, 0:size] + 0.5
  pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
  return depth[..., None].astype(np.float64) * (pixels @ np.linalg.inv(render.intrinsics(size)).T)


def _yaw(angle: float) -> np.ndarray:
  """Rotation about world y by `angle` radians, local to world."""
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _window_uniform(values: np.ndarray) -> np.ndarray:
  """(R - 2, R - 2): whether each interior pixel's 3x3 neighbourhood holds a single value."""
  windows = sliding_window_view(values, (3, 3))
  return windows.min(axis=(-1, -2)) == windows.max(axis=(-1, -2))


# Index pairs selecting all vertically, then all horizontally, 4-adjacent pixel pairs (first, second).
NEIGHBOUR_PAIRS = ((np.s_[:-1], np.s_[1:]), (np.s_[:, :-1], np.s_[:, 1:]))


def test_camera_follows_documented_convention(scenes):
  focal = 20 / math.tan(math.radians(30))  # 40 px over a 60 degree field of view
  np.testing.assert_allclose(render.intrinsics(40), [[focal, 0, 20], [0, focal, 20], [0, 0, 1]])
  for _, scene in scenes:
    camera = scene.camera
    rotation = camera.rotation
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    forward = [math.cos(camera.pitch) * math.sin(camera.yaw), math.sin(camera.pitch),
               math.cos(camera.pitch) * math.cos(camera.yaw)]
    np.testing.assert_allclose(rotation[:, 2], forward, atol=1e-12)
    assert rotation[1, 0] == pytest.approx(0.0, abs=1e-12)  # no roll: the image x axis is horizontal
    assert rotation[1, 1] < 0  # image y points down


def test_points_lie_on_their_labelled_surfaces_with_analytic_normals(scenes):
  """Depth is z-depth in metres: back-projected points satisfy the labelled surface's equation; normals match."""
  for example, scene in scenes:
    width, height, length = scene.room_size
    rotation, position = scene.camera.rotation, np.asarray(scene.camera.position)
    world = _camera_points(example["depth"]) @ rotation.T + position
    world_normals = example["normals"].astype(np.float64) @ rotation.T
    classes, instances = example["segmentation"], example["instances"]
    room = instances == 0
    floor, ceiling, wall = room & (classes == 0), room & (classes == 2), room & (classes == 1)
    assert (floor | ceiling | wall).sum() == room.sum()
    np.testing.assert_allclose(world[floor, 1], 0.0, atol=TOL)
    np.testing.assert_allclose(world[ceiling, 1], height, atol=TOL)
    np.testing.assert_allclose(world_normals[floor], np.broadcast_to([0, 1, 0], world_normals[floor].shape),
                               atol=1e-6)
    np.testing.assert_allclose(world_normals[ceiling], np.broadcast_to([0, -1, 0], world_normals[ceiling].shape),
                               atol=1e-6)
    wall_distance = np.stack([np.abs(np.abs(world[wall, 0]) - width / 2),
                              np.abs(np.abs(world[wall, 2]) - length / 2)])
    assert wall_distance.min(axis=0).max() < TOL
    on_x_wall = wall_distance[0] < wall_distance[1]
    inward = np.where(on_x_wall[:, None], [1, 0, 0], [0, 0, 1]) * -np.sign(world[wall])
    np.testing.assert_allclose(world_normals[wall], inward, atol=1e-6)
    assert np.all(np.abs(world) <= np.array([width / 2, height, length / 2]) + TOL)

    for k, obj in enumerate(scene.objects):
      mask = instances == k + 1
      assert np.all(classes[mask] == render.CLASS_NAMES.index(obj.kind))
      local = (world[mask] - obj.centre) @ _yaw(obj.yaw)
      half = np.asarray(obj.half_extents)
      if obj.kind == "sphere":
        np.testing.assert_allclose(np.linalg.norm(local, axis=1), half[0], atol=TOL)
        np.testing.assert_allclose(world_normals[mask], local / half[0], atol=1e-5)
      elif obj.kind == "cylinder":
        radial = np.hypot(local[:, 0], local[:, 2])
        on_side = (np.abs(radial - half[0]) < TOL) & (np.abs(local[:, 1]) <= half[1] + TOL)
        on_top = (np.abs(local[:, 1] - half[1]) < TOL) & (radial <= half[0] + TOL)
        assert np.all(on_side | on_top)
      else:
        np.testing.assert_allclose(np.max(np.abs(local) / half, axis=1), 1.0, atol=TOL)


def test_normals_agree_with_normals_estimated_from_depth(scenes):
  """On 3x3 windows of one class, one instance and no edge, cross products of depth-derived tangents give the
  stored normal. Measured at 40 px: median ~0.006 degrees, 95th percentile ~0.2, max ~7 (small curved objects)."""
  angles = []
  for example, _ in scenes:
    points = _camera_points(example["depth"])
    normals = example["normals"]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    assert np.all(np.sum(normals * points, axis=-1) < 0)  # facing the camera
    estimate = np.cross(points[1:-1, 2:] - points[1:-1, :-2], points[2:, 1:-1] - points[:-2, 1:-1])
    estimate /= np.linalg.norm(estimate, axis=-1, keepdims=True)
    estimate *= -np.sign(np.sum(estimate * points[1:-1, 1:-1], axis=-1, keepdims=True))
    smooth = (_window_uniform(example["segmentation"]) & _window_uniform(example["instances"])
              & _window_uniform(example["edges"]) & (example["edges"][1:-1, 1:-1] == 0))
    cosine = np.clip(np.sum(estimate * normals[1:-1, 1:-1], axis=-1), -1.0, 1.0)
    angles.append(np.degrees(np.arccos(cosine))[smooth])
  angles = np.concatenate(angles)
  assert len(angles) > NUM_SCENES * RESOLUTION**2 // 2
  assert np.median(angles) < 0.1
  assert np.percentile(angles, 95) < 1.0


def test_edges_mark_class_instance_and_crease_boundaries_on_the_nearer_side(scenes):
  for example, scene in scenes:
    depth, edges = example["depth"], example["edges"].astype(bool)
    classes, instances, normals = example["segmentation"], example["instances"], example["normals"]
    assert set(np.unique(example["edges"])) <= {0, 1}
    assert 0.01 < edges.mean() < 0.2
    boxes = [k + 1 for k, obj in enumerate(scene.objects) if obj.kind == "box"]
    explained = np.zeros_like(edges)
    for a, b in NEIGHBOUR_PAIRS:
      angle = np.degrees(np.arccos(np.clip(np.sum(normals[a] * normals[b], axis=-1), -1.0, 1.0)))
      same_instance = instances[a] == instances[b]
      # Room and box faces are planar: any normal change between neighbours on them is a crease.
      planar = same_instance & ((instances[a] == 0) | np.isin(instances[a], boxes))
      required = (classes[a] != classes[b]) | ~same_instance | (planar & (angle > 45))
      assert np.all(edges[a][required & (depth[a] <= depth[b])])
      assert np.all(edges[b][required & (depth[b] <= depth[a])])
      jump = np.abs(depth[a] - depth[b]) / np.minimum(depth[a], depth[b]) > 0.05
      discontinuity = (classes[a] != classes[b]) | ~same_instance | jump | (angle > 30)
      explained[a] |= discontinuity & (depth[a] <= depth[b])
      explained[b] |= discontinuity & (depth[b] <= depth[a])
    assert np.all(explained[edges])


def _expected_attributes(example, scene) -> dict[str, bool]:
  """The attributes recomputed from the scene description and the rendered segmentation/instances."""
  min_pixels = max(1, math.ceil(render.VISIBLE_FRACTION * example["instances"].size))
  counts = np.bincount(example["instances"].ravel(), minlength=len(scene.objects) + 1)[1:]
  visible = [obj for obj, count in zip(scene.objects, counts) if count >= min_pixels]
  class_pixels = np.bincount(example["segmentation"].ravel(), minlength=len(render.CLASS_NAMES))
  rotation, position = scene.camera.rotation, np.asarray(scene.camera.position)
  light_camera = np.linalg.solve(rotation, scene.light_direction)
  expected = {
      "has_sphere": any(obj.kind == "sphere" for obj in visible),
      "has_cylinder": any(obj.kind == "cylinder" for obj in visible),
      "has_red_object": any(obj.colour == "red" for obj in visible),
      "many_objects": len(visible) >= render.MANY_OBJECTS,
      "light_from_left": light_camera[0] < 0,
      "camera_looks_down": scene.camera.pitch < render.LOOKS_DOWN_PITCH,
      "checkered_floor": (class_pixels[render.CLASS_NAMES.index("floor")] >= min_pixels
                          and scene.floor.pattern == "checker"),
      "object_nearby": any(np.linalg.solve(rotation, np.asarray(obj.centre) - position)[2] < render.NEARBY_DEPTH
                           for obj in visible),
  }
  # A visible sphere (cylinder) means enough pixels of that class.
  for kind in ("sphere", "cylinder"):
    assert not expected[f"has_{kind}"] or class_pixels[render.CLASS_NAMES.index(kind)] >= min_pixels
  return expected


def test_attributes_agree_with_scene_and_are_balanced():
  """Attributes match their definitions on 300 scenes at 32 px, each positive on 10-90 % of them."""
  rows = []
  for i in range(300):
    example, scene = render.render_scene((11, 0, i), 32)
    expected = _expected_attributes(example, scene)
    assert example["attributes"].dtype == np.uint8 and example["attributes"].shape == (len(render.ATTRIBUTE_NAMES),)
    assert dict(zip(render.ATTRIBUTE_NAMES, example["attributes"].astype(bool))) == expected
    rows.append(example["attributes"])
  rates = np.mean(rows, axis=0)
  assert np.all((rates > 0.1) & (rates < 0.9)), dict(zip(render.ATTRIBUTE_NAMES, rates))


def test_scene_does_not_depend_on_resolution():
  low, scene = render.render_scene(3, 16)
  high, same_scene = render.render_scene(3, 32)
  assert scene == same_scene
  assert low["image"].shape == (16, 16, 3) and high["image"].shape == (32, 32, 3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Two builds of the same tiny config in different directories, and one with another seed."""
  sizes = dict(resolution=32, num_train=8, num_validation=4, num_test=4)
  first = build(str(tmp_path_factory.mktemp("first")), **sizes)
  second = build(str(tmp_path_factory.mktemp("second")), **sizes)
  other_seed = build(str(tmp_path_factory.mktemp("other")), SyntheticScenesConfig(name="tiny_seed1", seed=1, **sizes))
  return first, second, other_seed, sizes


def test_build_reads_back_with_declared_shapes_dtypes_and_sizes(built):
  builder, _, _, sizes = built
  assert isinstance(builder, SyntheticScenes)
  features = builder.info.features
  for split, split_index in (("train", 0), ("validation", 1), ("test", 2)):
    source = builder.as_data_source(split)
    assert len(source) == sizes[f"num_{split}"] == builder.info.splits[split].num_examples
    for i in (0, len(source) - 1):
      example = source[i]
      assert set(example) == set(features)
      for name, value in example.items():
        assert isinstance(value, np.ndarray)
        assert value.dtype == features[name].np_dtype and value.shape == features[name].shape, name
      # Examples are stored in key order, rendered from the seed (config seed, split index, i).
      rendered, _ = render.render_scene((0, split_index, i), sizes["resolution"])
      for name, value in rendered.items():
        np.testing.assert_array_equal(example[name], value, err_msg=name)


def test_rebuild_is_identical_and_another_seed_differs(built):
  first, second, other_seed, _ = built
  for split in ("train", "validation", "test"):
    a, b, c = (builder.as_data_source(split) for builder in (first, second, other_seed))
    assert len(a) == len(b) == len(c)
    for i in range(len(a)):
      for name in a[i]:
        np.testing.assert_array_equal(a[i][name], b[i][name], err_msg=f"{split}[{i}].{name}")
      assert not np.array_equal(a[i]["image"], c[i]["image"])
