"""data_pipelines.episodes on an in-memory source whose example i encodes i (depth = i + 1 away from pixel (0, 0))."""
import json

import jax
import ml_collections
import numpy as np
import pytest

from data_pipelines import episodes as ep
from msp.meta import MetaBatch

H, W = 4, 6
ATTRIBUTE_NAMES = ("has_sphere", "has_cube", "always")
TASKS = {"seg": dict(kind="segmentation", num_classes=5), "depth": dict(kind="depth"),
         "normals": dict(kind="normals"), "edges": dict(kind="edges"), "has_cube": dict(kind="attributes"),
         "shapes": dict(kind="attributes", attributes=("always", "has_sphere"), num_attributes=2)}


def make_example(i: int) -> dict[str, np.ndarray]:
  """Example i in the builders' layout; (0, 0) is void/invalid in every dense map."""
  image = np.zeros((H, W, 3), np.uint8)
  image[..., 0], image[..., 1] = i % 256, 255
  segmentation = np.full((H, W), i % 5, np.uint8)
  segmentation[0, 0] = 255
  depth = np.full((H, W), i + 1.0, np.float32)
  depth[0, 0] = 0.0
  normals = np.broadcast_to(np.float32([0, 0, 1]), (H, W, 3)).copy()
  normals[0, 0] = 0.0
  edges = (np.add.outer(np.arange(H), np.arange(W)) % 2).astype(np.uint8)
  attributes = np.uint8([i % 2, (i // 2) % 2, 1])
  return dict(image=image, segmentation=segmentation, depth=depth, normals=normals, edges=edges,
              attributes=attributes)


class Source:
  """Random access by index, as tfds.data_source gives; counts reads."""

  def __init__(self, n: int):
    self.examples = [make_example(i) for i in range(n)]
    self.reads = 0

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    self.reads += 1
    return self.examples[i]


class BatchedSource(Source):
  """Also has tfds's batched read, `__getitems__`."""

  def __getitems__(self, keys):
    return [self.examples[k] for k in keys]


def drawn(batch: dict) -> np.ndarray:
  """Source indices of a batch's examples, read back from depth (…, H, W, 1)."""
  return batch["depth"][..., -1, -1, 0].astype(np.int64) - 1


def specs(names=tuple(TASKS)):
  return ep.target_specs(ml_collections.ConfigDict(TASKS), names, ATTRIBUTE_NAMES)


def sampler(n=40, seed=0, episodes=4, support=3, query=2, **kw):
  return ep.MetaBatchSampler(Source(n), specs(), episodes=episodes, support_size=support, query_size=query,
                                   seed=seed, **kw)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and np.array_equal(x, y)


def test_targets_have_the_kinds_dtypes_shapes_and_values():
  out = ep.prepare_example(make_example(7), specs())
  assert out["image"].dtype == np.float32 and out["image"].shape == (H, W, 3)
  np.testing.assert_allclose(out["image"][..., 0], 7 / 255)
  assert out["image"][..., 1].min() == 1.0 and out["image"][..., 2].max() == 0.0
  assert out["seg"].dtype == np.int32 and out["seg"].shape == (H, W)
  assert out["seg"][0, 0] == -1 and np.all(out["seg"].ravel()[1:] == 2)
  assert out["depth"].dtype == np.float32 and out["depth"].shape == (H, W, 1) and out["depth"][1, 1, 0] == 8.0
  assert out["normals"].dtype == np.float32 and out["normals"].shape == (H, W, 3)
  assert out["edges"].dtype == np.float32 and out["edges"].shape == (H, W, 1)
  np.testing.assert_array_equal(out["edges"][..., 0], make_example(7)["edges"])
  np.testing.assert_array_equal(out["has_cube"], np.float32([1]))  # (7 // 2) % 2
  np.testing.assert_array_equal(out["shapes"], np.float32([1, 1]))  # always, has_sphere, in the task's order
  assert out["shapes"].dtype == np.float32


def test_segmentation_void_options():
  example = make_example(3)
  custom = ep.target_spec("seg", "segmentation", dict(ignore_index=99))(example)
  assert custom[0, 0] == 99 and custom[0, 1] == 3
  assert ep.target_spec("seg", "segmentation", dict(void_value=None))(example)[0, 0] == 255
  assert ep.target_spec("seg", "segmentation", dict(void_value=3))(example)[0, 1] == -1


def test_target_spec_errors_name_the_task():
  with pytest.raises(ValueError, match="'Male'.*ATTRIBUTE_NAMES"):
    ep.target_spec("Male", "attributes", {}, ATTRIBUTE_NAMES)
  with pytest.raises(ValueError, match="num_attributes=3"):
    ep.target_spec("x", "attributes", dict(attributes="has_cube", num_attributes=3), ATTRIBUTE_NAMES)
  with pytest.raises(ValueError, match="'task0'.*'regression'"):
    ep.target_spec("task0", "regression")
  with pytest.raises(ValueError, match=r"lack features \['inverse_depth'\]"):
    ep.MetaBatchSampler(Source(10), (ep.target_spec("depth", "depth", dict(feature="inverse_depth")),),
                              episodes=1, support_size=1, query_size=1, seed=0)


def test_support_and_query_are_disjoint_and_hold_the_drawn_examples():
  s = sampler()
  for step in range(5):
    indices, _ = s.draw(step)
    batch = s(step)
    assert isinstance(batch, MetaBatch) and batch.task_mask.shape == (4, len(TASKS))
    assert batch.support["image"].shape == (4, 3, H, W, 3) and batch.query["seg"].shape == (4, 2, H, W)
    np.testing.assert_array_equal(np.concatenate([drawn(batch.support), drawn(batch.query)], axis=1), indices)
    for e in range(4):
      assert not set(drawn(batch.support)[e]) & set(drawn(batch.query)[e])
      assert len(set(indices[e])) == 5


def test_same_seed_same_batches_other_seed_or_step_other_batches():
  a, b, c = sampler(seed=1), sampler(seed=1), sampler(seed=2)
  assert_trees_equal(a(3), b(3))
  assert not np.array_equal(a.draw(3)[0], c.draw(3)[0])
  assert not np.array_equal(a.draw(3)[0], a.draw(4)[0])


def test_task_masks_are_non_empty_subsets():
  masks = np.concatenate([sampler(episodes=8).draw(step)[1] for step in range(20)])
  assert set(np.unique(masks)) <= {0.0, 1.0} and masks.sum(axis=1).min() >= 1
  assert len({tuple(m) for m in masks}) > 10
  np.testing.assert_array_equal(sampler(task_sampling="all").draw(0)[1], 1.0)


def test_resume_from_iterator_state_is_bitwise_identical():
  dataset = ep.meta_batch_dataset(sampler(), num_threads=2, prefetch_buffer_size=3)
  it = iter(dataset)
  first = [next(it) for _ in range(3)]
  state = json.loads(json.dumps(it.get_state()))
  rest = [next(it) for _ in range(4)]
  resumed = iter(ep.meta_batch_dataset(sampler(), num_threads=1, prefetch_buffer_size=2))
  resumed.set_state(state)
  assert_trees_equal(rest, [next(resumed) for _ in range(4)])
  assert_trees_equal(first + rest, [sampler()(step) for step in range(7)])


def test_finite_dataset_has_num_steps_batches():
  assert len(list(ep.meta_batch_dataset(sampler(), num_steps=3, num_threads=0))) == 3


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_load_consecutive_slices_of_the_one_process_meta_batch(process_count):
  whole = sampler(episodes=4)
  parts = [sampler(episodes=4, process_index=p, process_count=process_count) for p in range(process_count)]
  for step in range(5):
    merged = jax.tree.map(lambda *x: np.concatenate(x), *(p(step) for p in parts))
    assert merged.task_mask.shape == (4, len(TASKS)) and merged.support["image"].shape[0] == 4
    assert_trees_equal(merged, whole(step))
    indices = whole.draw(step)[0]
    assert indices.shape == (4, 5) and all(len(set(row)) == 5 for row in indices)
    np.testing.assert_array_equal(drawn(merged.query), indices[:, 3:])


def test_configuration_errors_name_the_config_keys():
  with pytest.raises(ValueError, match="meta.episodes=3"):
    sampler(episodes=3, process_index=0, process_count=2)
  with pytest.raises(ValueError, match=r"meta.support_size \+ meta.query_size = 6 \+ 5"):
    sampler(n=10, support=6, query=5, episodes=2, process_index=1, process_count=2)
  sampler(n=11, support=6, query=5, episodes=2, process_index=1, process_count=2)


@pytest.mark.parametrize("source_type", [Source, BatchedSource])
def test_eval_visits_every_example_once_in_order(source_type):
  source = source_type(23)
  batches = list(ep.eval_dataset(source, specs(("seg", "depth")), batch_size=5))
  assert len(batches) == 5 and all(b.examples["image"].shape == (5, H, W, 3) for b in batches)
  index = np.concatenate([b.index for b in batches])
  valid = np.concatenate([b.valid for b in batches])
  np.testing.assert_array_equal(index[valid], np.arange(23))
  np.testing.assert_array_equal(np.concatenate([drawn(b.examples) for b in batches])[valid], np.arange(23))
  assert valid.sum() == 23 and np.all(index[~valid] == -1)
  if source_type is BatchedSource:
    assert source.reads == 1  # the validation read; batches went through __getitems__


def test_sharded_eval_covers_the_split_once_with_equal_batch_counts():
  per_process = [list(ep.eval_dataset(Source(23), specs(("depth",)), batch_size=4, process_index=p,
                                            process_count=3, num_threads=0)) for p in range(3)]
  assert {len(b) for b in per_process} == {2}
  index = np.concatenate([b.index[b.valid] for batches in per_process for b in batches])
  np.testing.assert_array_equal(np.sort(index), np.arange(23))


def test_support_only_sampler_has_an_empty_query():
  batch = sampler(episodes=1, support=6, query=0)(0)
  assert batch.support["image"].shape == (1, 6, H, W, 3) and batch.query["image"].shape == (1, 0, H, W, 3)
  assert len(set(drawn(batch.support)[0])) == 6
