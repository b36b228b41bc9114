"""data_pipelines.transforms on small synthetic examples, and transforms inside the episodes pipeline."""
import functools
import json

import ml_collections
import numpy as np
import pytest

from data_pipelines import episodes as ep
from data_pipelines import transforms as tr
from tests.test_episodes_pipeline import Source, assert_trees_equal, specs

LABELS = (0, 3, 7, 255)
OPTIONS = tr.AugmentOptions(size=(12, 16), scale=(1.0, 2.0), flip=0.5, brightness=0.4, contrast=0.4,
                            saturation=0.4, hue=0.1)


def example(height=24, width=32, seed=0) -> dict[str, np.ndarray]:
  """Random maps in the builders' layout; the top-left quarter of depth and normals is invalid."""
  rng = np.random.default_rng(seed)
  normals = rng.normal(size=(height, width, 3)).astype(np.float32)
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  depth = rng.uniform(2.0, 3.0, (height, width)).astype(np.float32)
  depth[:height // 2, :width // 2] = 0
  normals[:height // 2, :width // 2] = 0
  return dict(image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
              segmentation=rng.choice(np.uint8(LABELS), (height, width)), depth=depth, normals=normals,
              edges=rng.integers(0, 2, (height, width), dtype=np.uint8), attributes=np.uint8([1, 0, 1]))


GEOMETRIC = {
    "downsize": lambda e: tr.resize(e, (7, 9)),
    "upsize": lambda e: tr.resize(e, (53, 70)),
    "fit": lambda e: tr.fit(e, (20, 20)),
    "scale_crop": lambda e: tr.scale_crop(e, (16, 16), 1.7, (0.2, 0.9)),
    "flip": tr.hflip,
    "augment": lambda e: tr.augment(e, np.random.default_rng(3), OPTIONS),
}


def test_flipping_twice_is_the_identity_bitwise():
  e = example()
  twice = tr.hflip(tr.hflip(e))
  assert twice.keys() == e.keys()
  for key in e:
    assert twice[key].dtype == e[key].dtype and twice[key].tobytes() == e[key].tobytes()


def test_flip_mirrors_maps_and_negates_the_normals_x():
  e, flipped = example(), tr.hflip(example())
  for key in ("image", "segmentation", "depth", "edges"):
    np.testing.assert_array_equal(flipped[key], e[key][:, ::-1])
  np.testing.assert_array_equal(flipped["normals"], e["normals"][:, ::-1] * [-1, 1, 1])
  np.testing.assert_array_equal(flipped["attributes"], e["attributes"])


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_normals_stay_unit_on_valid_pixels(name):
  out = GEOMETRIC[name](example())
  norm = np.linalg.norm(out["normals"], axis=-1)
  valid = norm > 0
  assert out["normals"].dtype == np.float32 and valid.mean() > 0.5
  np.testing.assert_allclose(norm[valid], 1.0, rtol=1e-5)
  np.testing.assert_array_equal(valid, out["depth"] > 0)  # both maps have the same invalid region


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_labels_stay_in_the_original_label_set(name):
  out = GEOMETRIC[name](example())
  assert out["segmentation"].dtype == np.uint8 and set(np.unique(out["segmentation"])) <= set(LABELS)
  assert out["edges"].dtype == np.uint8 and set(np.unique(out["edges"])) <= {0, 1}


@pytest.mark.parametrize("size", [(6, 8), (16, 16), (64, 64)])
def test_invalid_depth_never_leaks_into_valid_pixels(size):
  depth = np.random.default_rng(0).uniform(2.0, 3.0, (32, 32)).astype(np.float32)
  depth[:16, :16] = 0
  out = tr.resize(dict(depth=depth), size)["depth"]
  valid = out[out > 0]
  assert valid.min() >= 2.0 * (1 - 1e-6) and valid.max() <= 3.0 * (1 + 1e-6)
  # Output pixels whose filter lies inside the invalid block stay invalid: for a factor f = n / 32 the filter of
  # output pixel i spans source pixels within max(1, 1/f) of its centre (i + 0.5) / f - 0.5.
  inside = [[i for i in range(n) if (i + 0.5) * 32 / n - 0.5 + max(1, 32 / n) <= 16] for n in size]
  assert all(inside) and np.all(out[np.ix_(*inside)] == 0)
  assert np.all(out[-1, :] > 0) and np.all(out[:, -1] > 0)


def test_a_constant_valid_region_keeps_its_value_next_to_invalid_pixels():
  depth = np.full((20, 20), 4.0, np.float32)
  depth[5:15, 5:15] = 0
  out = tr.resize(dict(depth=depth), (7, 7))["depth"]
  np.testing.assert_allclose(out[out > 0], 4.0, rtol=1e-6)


@pytest.mark.parametrize("position", [(0.5, 0.5), (0.0, 1.0), (0.3, 0.7)])
def test_depth_is_divided_by_the_zoom_on_a_plane(position):
  rows, cols = np.mgrid[0:64, 0:64].astype(np.float32)

  def plane(r, c):
    return 2.0 + 0.03 * r + 0.01 * c

  out = tr.scale_crop(dict(depth=plane(rows, cols)), (64, 64), 2.0, position)["depth"]
  top, left = 32 * position[0], 32 * position[1]  # the 32 x 32 window's corner, in source pixels
  # Output pixel (i, j) shows the source point at its centre, (top + (i + 0.5) / 2 - 0.5, left + ...) in index
  # space; bilinear interpolation is exact on a plane (away from the image border, where taps are cut).
  i, j = np.mgrid[1:63, 1:63]
  expected = plane(top + (i + 0.5) / 2 - 0.5, left + (j + 0.5) / 2 - 0.5) / 2
  np.testing.assert_allclose(out[1:63, 1:63], expected, rtol=1e-5)


def test_zoom_one_at_the_same_size_is_the_identity_and_fit_crops_the_centre():
  e = example(16, 16)
  same = tr.scale_crop(e, (16, 16), 1.0)
  wide = example(16, 24)
  centre = tr.fit(wide, (16, 16))
  for key in ("image", "segmentation", "depth", "edges", "attributes"):
    np.testing.assert_array_equal(same[key], e[key])
    np.testing.assert_array_equal(centre[key], wide[key][:, 4:20] if key != "attributes" else wide[key])
  np.testing.assert_allclose(same["normals"], e["normals"], atol=1e-7)  # renormalised: within rounding
  np.testing.assert_allclose(centre["normals"], wide["normals"][:, 4:20], atol=1e-7)


def test_nearest_resize_matches_a_hand_computation():
  labels = (10 * np.arange(5)[:, None] + np.arange(6)).astype(np.uint8)  # value = 10 * row + column
  # Output pixel i samples source pixel floor((i + 0.5) * in / out): rows 5 -> 3 take 0, 2, 4; columns 6 -> 4 take
  # floor(0.75, 2.25, 3.75, 5.25) = 0, 2, 3, 5; columns 6 -> 9 take floor((j + 0.5) * 2 / 3) = 0, 1, 1, 2, 3, ...
  np.testing.assert_array_equal(tr.resize(dict(segmentation=labels), (3, 4))["segmentation"],
                                [[0, 2, 3, 5], [20, 22, 23, 25], [40, 42, 43, 45]])
  np.testing.assert_array_equal(tr.resize(dict(edges=labels[:1]), (1, 9))["edges"],
                                [[0, 1, 1, 2, 3, 3, 4, 5, 5]])


def test_bilinear_image_resize_averages_when_downsampling():
  image = np.zeros((4, 16, 3), np.uint8)
  image[:, 1::2] = 200  # columns alternate 0, 200: sampling would keep one of them, a 2x antialiased filter averages
  # Away from the border (where the filter is cut) the triangle of radius 2 weighs 0, 200, 0, 200 by 1, 3, 3, 1.
  np.testing.assert_array_equal(tr.resize(dict(image=image), (2, 8))["image"][:, 1:-1], 100)


def test_maps_at_another_resolution_get_the_same_window():
  e = example(16, 24)
  labels = np.repeat(np.repeat(e["segmentation"], 2, axis=0), 2, axis=1)  # the labels at twice the resolution
  out = tr.scale_crop({**e, "segmentation": labels}, (8, 8), 1.5, (0.3, 0.6))
  np.testing.assert_array_equal(out["segmentation"], tr.scale_crop(e, (8, 8), 1.5, (0.3, 0.6))["segmentation"])


def test_color_jitter_changes_only_the_image_and_keeps_uint8():
  e = example()
  out = tr.color_jitter(e, np.random.default_rng(0), brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2)
  assert out["image"].dtype == np.uint8 and out["image"].shape == e["image"].shape
  assert not np.array_equal(out["image"], e["image"])
  for key in e.keys() - {"image"}:
    assert out[key] is e[key]
  assert tr.color_jitter(e, np.random.default_rng(0))["image"] is e["image"]


def test_grey_images_stay_grey_under_saturation_and_hue():
  grey = np.repeat(np.random.default_rng(0).integers(0, 256, (8, 8, 1), dtype=np.uint8), 3, axis=-1)
  out = tr.color_jitter(dict(image=grey), np.random.default_rng(1), saturation=1.0, hue=0.5)["image"]
  assert np.abs(out.astype(int) - grey).max() <= 1


def test_same_seed_same_output_other_seed_other_output():
  a, b, c = (tr.augment(example(), np.random.default_rng(seed), OPTIONS) for seed in (5, 5, 6))
  assert_trees_equal(a, b)
  assert a["image"].shape == (12, 16, 3) and a["depth"].shape == (12, 16)
  assert not np.array_equal(a["image"], c["image"])


def test_zoomed_augmentation_divides_depth_by_the_drawn_scale():
  depth = np.full((24, 32), 6.0, np.float32)
  options = tr.AugmentOptions(size=(12, 16), scale=(1.5, 3.0))
  scale = np.random.default_rng(9).uniform(1.5, 3.0)  # augment's first draw
  out = tr.augment(dict(depth=depth), np.random.default_rng(9), options)["depth"]
  np.testing.assert_allclose(out, 6.0 / scale, rtol=1e-6)


def test_options_from_config():
  config = ml_collections.ConfigDict(dict(size=64, scale=[1.0, 1.5], flip=0.5, brightness=0.2))
  options = tr.AugmentOptions.from_config(config)
  assert options == tr.AugmentOptions(size=(64, 64), scale=(1.0, 1.5), flip=0.5, brightness=0.2)
  assert tr.AugmentOptions.from_config(None) is None
  assert tr.AugmentOptions.from_config(dict(enabled=False, size=64)) is None
  with pytest.raises(ValueError, match=r"unknown augmentation options \['zoom'\]"):
    tr.AugmentOptions.from_config(dict(size=64, zoom=2))
  with pytest.raises(ValueError, match="1 <= min"):
    tr.AugmentOptions.from_config(dict(size=64, scale=(0.5, 1.0)))
  e = example()
  assert_trees_equal(tr.augment(e, np.random.default_rng(0), None), e)


def augmenting_sampler(seed=0, **kw):
  transform = functools.partial(tr.augment, options=tr.AugmentOptions(size=(4, 4), scale=(1.0, 1.5), flip=0.5,
                                                                      brightness=0.3))
  return ep.MetaBatchSampler(Source(40), specs(), episodes=4, support_size=3, query_size=2, seed=seed,
                             transform=transform, **kw)


def test_sampler_with_a_transform_is_deterministic_and_resumable():
  batch = augmenting_sampler()(0)
  assert batch.support["image"].shape == (4, 3, 4, 4, 3) and batch.query["normals"].shape == (4, 2, 4, 4, 3)
  assert_trees_equal(augmenting_sampler()(2), augmenting_sampler()(2))
  dataset = ep.meta_batch_dataset(augmenting_sampler(), num_threads=2, prefetch_buffer_size=3)
  it = iter(dataset)
  first = [next(it) for _ in range(2)]
  state = json.loads(json.dumps(it.get_state()))
  rest = [next(it) for _ in range(3)]
  resumed = iter(ep.meta_batch_dataset(augmenting_sampler(), num_threads=1, prefetch_buffer_size=2))
  resumed.set_state(state)
  assert_trees_equal(rest, [next(resumed) for _ in range(3)])
  assert_trees_equal(first + rest, [augmenting_sampler()(step) for step in range(5)])


def test_sampler_gives_each_slot_and_step_its_own_generator_whatever_the_process_count():
  def mark(example, rng):  # writes the generator's first draw into the image
    return {**example, "image": np.full_like(example["image"], rng.integers(256))}

  def marks(step, seed=0, **kw):
    sampler = ep.MetaBatchSampler(Source(40), specs(), episodes=4, support_size=3, query_size=2, seed=seed,
                                  transform=mark, **kw)
    batch = sampler(step)
    images = np.concatenate([batch.support["image"], batch.query["image"]], axis=1)
    return np.rint(images[..., 0, 0, 0] * 255).astype(int)

  slots = marks(0)
  assert slots.shape == (4, 5) and len(np.unique(slots)) > 12
  seeds = np.random.SeedSequence((0, 0, 0)).spawn(20)
  np.testing.assert_array_equal(slots.ravel(), [np.random.default_rng(s).integers(256) for s in seeds])
  assert not np.array_equal(slots, marks(1)) and not np.array_equal(slots, marks(0, seed=1))
  np.testing.assert_array_equal(slots[2:], marks(0, process_index=1, process_count=2))


def test_untransformed_sampler_is_unchanged_by_the_hook():
  plain = ep.MetaBatchSampler(Source(40), specs(), episodes=4, support_size=3, query_size=2, seed=0)
  identity = ep.MetaBatchSampler(Source(40), specs(), episodes=4, support_size=3, query_size=2, seed=0,
                                 transform=lambda example, rng: example)
  assert_trees_equal(plain(3), identity(3))


def test_eval_dataset_applies_a_deterministic_transform():
  batches = list(ep.eval_dataset(Source(7), specs(("seg", "depth")), batch_size=4, num_threads=0,
                                 transform=functools.partial(tr.fit, size=(4, 4))))
  assert [b.examples["image"].shape for b in batches] == [(4, 4, 4, 3)] * 2
  depth = np.concatenate([b.examples["depth"] for b in batches])[np.concatenate([b.valid for b in batches])]
  np.testing.assert_array_equal(depth[:, -1, -1, 0], np.arange(1, 8))  # depth unchanged by fit
