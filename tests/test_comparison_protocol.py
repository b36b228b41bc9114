"""The comparison protocol: magnitude pruning to a FLOPs target, a frozen zero pattern, runs started from runs."""
import fractions
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from experiments.configs import synthetic
from experiments.run.comparison import FINETUNED, finetune
from experiments.run.magnitude import prune_run
from experiments.run.training import load_config, train, trained_network
from msp.parallel import make_mesh, replicate
from msp.sparsity import magnitude_prune
from msp.sparsity.magnitude import magnitude_masks
from msp.train import ConfigError, build_meta_learner
from msp.train.checkpoint import CheckpointError
from msp.train.state import MetaTrainState
from msp.train.step import make_meta_train_step
from tests.meta_fixtures import tiny_problem
from tests.run_fixtures import with_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two layers whose norms rank channels differently per layer and across layers; FLOPs = kept channels / 5.
NORMS = [np.array([3.0, 2.9, 2.8]), np.array([5.0, 0.1])]
COUNT_FLOPS = lambda masks: sum(int(m.sum()) for m in masks) / 5


def test_uniform_and_global_scopes_worked_by_hand():
  # target 0.8 = 4 channels. uniform: q = 2/3 keeps ⌈2⌉ + ⌈4/3⌉ = 2 + 2; global: scores ‖θ‖/mean = [1.034, 1.0,
  # 0.966] and [1.96, 0.039], so the 4 best are all of layer 0 and the first of layer 1.
  uniform = magnitude_masks(NORMS, COUNT_FLOPS, 0.8, "uniform")
  assert [m.tolist() for m in uniform] == [[True, True, False], [True, True]]
  global_ = magnitude_masks(NORMS, COUNT_FLOPS, 0.8, "global")
  assert [m.tolist() for m in global_] == [[True, True, True], [True, False]]
  # target 0.6 = 3 channels: uniform q = 1/2 keeps 2 + 1 (a third channel in layer 1 would need q > 1/2)
  assert [m.tolist() for m in magnitude_masks(NORMS, COUNT_FLOPS, 0.6, "uniform")] == [[True, True, False],
                                                                                       [True, False]]
  # below the floor of one channel per layer: the floor
  for scope in ("uniform", "global"):
    assert [m.tolist() for m in magnitude_masks(NORMS, COUNT_FLOPS, 0.1, scope)] == [[True, False, False],
                                                                                    [True, False]]
  with pytest.raises(ValueError, match="prune.scope"):
    magnitude_masks(NORMS, COUNT_FLOPS, 0.5, "layerwise")
  with pytest.raises(ValueError, match="prune.flops_kept"):
    magnitude_masks(NORMS, COUNT_FLOPS, 0.0, "uniform")


@pytest.fixture(scope="module")
def tiny_learner():
  config = synthetic.get_config("dense_mtl,tiny")
  learner = build_meta_learner(config)
  return learner, learner.init_state(jax.random.key(0))


def _brute_force_uniform(norms, flops, target):
  """The largest uniform kept fraction within target, by trying every fraction k/G of every layer."""
  best = None
  for q in sorted({fractions.Fraction(k, len(n)) for n in norms for k in range(len(n) + 1)}):
    counts = [max(1, math.ceil(q * len(n))) for n in norms]
    masks = [np.isin(np.arange(len(n)), np.argsort(-n, kind="stable")[:k]) for n, k in zip(norms, counts)]
    if flops(masks) <= target:
      best = masks
  return best


@pytest.mark.parametrize("target", [0.25, 0.5])
def test_magnitude_prune_of_a_network_keeps_the_largest_channels_within_the_target(tiny_learner, target):
  learner, state = tiny_learner
  spec, cost = learner.spec, learner.cost_model
  norms = [np.asarray(n) for n in spec.group_norms(state.params)]
  flops = lambda masks: float(cost.flops_kept_by_alive(masks))
  for scope in ("uniform", "global"):
    params, reached = magnitude_prune(state.params, spec, cost, target, scope)
    alive = [np.asarray(a) for a in spec.alive(params)]
    assert reached <= target and reached == pytest.approx(flops(alive))
    assert reached == pytest.approx(float(cost.flops_kept(params)))
    for n, a in zip(norms, alive):  # within a layer, every kept channel outranks every removed one
      assert a.any() and (a.all() or n[a].min() >= n[~a].max())
    if scope == "uniform":
      assert [a.tolist() for a in alive] == [m.tolist() for m in _brute_force_uniform(norms, flops, target)]
    else:
      # one threshold on layer-normalised norms: a channel kept above a layer's floor of one outranks every removed
      scores = [n / n.mean() for n in norms]
      kept = np.concatenate([s[a] for s, a in zip(scores, alive) if a.sum() > 1])
      removed = np.concatenate([s[~a] for s, a in zip(scores, alive)])
      assert kept.size and removed.size and kept.min() >= removed.max()
    # kept channels are untouched, removed ones are exactly zero
    for layer, a in zip(spec.layers, alive):
      w = np.asarray(_leaf(params, layer.kernels[0]))
      w0 = np.asarray(_leaf(state.params, layer.kernels[0]))
      np.testing.assert_array_equal(w[..., a], w0[..., a])
      assert not np.any(w[..., ~a])


def _leaf(params, path):
  for key in path:
    params = params[key]
  return params


def _joint_step(freeze_pattern: bool):
  objective, params, stats, rho, mb = tiny_problem(dtype=jnp.float32, mode="joint", sparse=False)
  step = make_meta_train_step(objective, make_mesh(1), optax.constant_schedule(0.1), learn_lambda=False,
                              freeze_pattern=freeze_pattern)
  spec = objective.spec
  dead = [np.arange(layer.num_groups) % 2 == 0 for layer in spec.layers]  # every other channel removed
  params = spec.scale_groups(params, [~d for d in dead])
  state = replicate(MetaTrainState.create(params=params, batch_stats=stats, rho=rho, tx=optax.sgd(0.1, 0.9),
                                          rho_tx=optax.adam(0.1)), make_mesh(1))
  before = [np.asarray(n) for n in spec.group_norms(state.params)]
  for _ in range(3):
    state, _ = step(state, mb)
  return spec, dead, before, [np.asarray(n) for n in spec.group_norms(state.params)]


def test_a_frozen_pattern_keeps_zero_groups_exactly_zero_and_trains_the_rest():
  spec, dead, before, after = _joint_step(freeze_pattern=True)
  for d, b, a in zip(dead, before, after):
    assert np.all(a[d] == 0) and np.all(b[d] == 0)
    assert not np.allclose(a[~d], b[~d])
  # without the freeze, the same updates bring the removed channels back
  _, dead, _, after = _joint_step(freeze_pattern=False)
  assert any(np.any(a[d] > 0) for d, a in zip(dead, after))


def test_a_frozen_pattern_needs_joint_training():
  config = synthetic.get_config("budget,tiny")
  config.sparsity.freeze_pattern = True
  with pytest.raises(ConfigError, match="freeze_pattern=True needs meta.mode='joint'"):
    build_meta_learner(config)


@pytest.mark.slow
def test_prune_then_finetune_keeps_the_pattern_and_refuses_other_networks(data_dir, tmp_path):
  dense_dir, pruned_dir = str(tmp_path / "dense"), str(tmp_path / "magnitude")
  config = with_overrides(synthetic.get_config("dense_mtl,tiny"), **{"data.data_dir": data_dir})
  train(config, dense_dir, progress=False)
  magnitude = with_overrides(config, **{"prune.scope": "global", "prune.flops_kept": 0.4})
  step, reached = prune_run(dense_dir, pruned_dir, magnitude)
  assert step == config.steps and reached <= 0.4
  with pytest.raises(ConfigError, match="already holds a run"):
    prune_run(dense_dir, pruned_dir, magnitude)
  saved = load_config(pruned_dir)
  assert saved["init"]["from_run"] == os.path.abspath(dense_dir) and saved["prune"]["flops_kept"] == 0.4
  _, pruned = trained_network(pruned_dir)
  learner = build_meta_learner(config)
  assert float(learner.cost_model.flops_kept(pruned.params)) == pytest.approx(reached)

  out, _ = finetune(pruned_dir, progress=False)
  assert out == os.path.join(pruned_dir, FINETUNED)
  best = json.load(open(os.path.join(out, "checkpoints_best", "best.json")))
  ft_config = load_config(out)
  assert ft_config["meta"]["mode"] == "joint" and ft_config["sparsity"]["freeze_pattern"]
  assert ft_config["steps"] == config.finetune.steps and best["split"] == "validation"
  _, tuned = trained_network(out)  # the best checkpoint
  _, last = trained_network(out, config.finetune.steps)
  for got in (tuned, last):
    assert [a.tolist() for a in learner.spec.alive(got.params)] == \
        [a.tolist() for a in learner.spec.alive(pruned.params)]
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(last.params), jax.tree.leaves(pruned.params)))

  # a run whose network differs (another model) cannot start from it
  wider = with_overrides(config, **{"model.head_width": config.model.head_width * 2,
                                    "init.from_run": pruned_dir})
  with pytest.raises(ConfigError, match="init.from_run=.*network differs"):
    train(wider, str(tmp_path / "wider"), progress=False)
  assert not os.path.exists(tmp_path / "wider" / "config.json")


@pytest.mark.slow
def test_a_learned_pattern_put_on_dense_weights(data_dir, tmp_path):
  """prune.pattern_from: exactly the channels the pattern run kept, with the dense run's values; a missing or
  different pattern run is one error and writes nothing."""
  config = with_overrides(synthetic.get_config("dense_mtl,tiny"), **{"data.data_dir": data_dir})
  dense_dir, learned_dir = str(tmp_path / "dense"), str(tmp_path / "learned")
  train(config, dense_dir, progress=False)
  budget = with_overrides(synthetic.get_config("budget,tiny"), **{"data.data_dir": data_dir,
                                                                   "sparsity.lambda_init": 6.0})
  train(budget, learned_dir, progress=False)
  learner = build_meta_learner(config)
  _, learned = trained_network(learned_dir)
  kept = [np.asarray(a) for a in learner.spec.alive(learned.params)]
  assert 0 < sum(int(k.sum()) for k in kept) < sum(k.size for k in kept)  # the pattern removes some channels

  transfer = with_overrides(config, **{"prune.pattern_from": learned_dir})
  step, reached = prune_run(dense_dir, str(tmp_path / "transfer"), transfer)
  _, dense = trained_network(dense_dir)
  _, pruned = trained_network(str(tmp_path / "transfer"))
  assert [np.asarray(a).tolist() for a in learner.spec.alive(pruned.params)] == [k.tolist() for k in kept]
  pruned_flat, dense_flat = (traverse_util.flatten_dict(s.params) for s in (pruned, dense))
  for layer, keep in zip(learner.spec.layers, kept):  # kept channels hold the dense values, the others zeros
    got, want = np.asarray(pruned_flat[layer.kernels[0]]), np.asarray(dense_flat[layer.kernels[0]])
    np.testing.assert_array_equal(got[..., keep], want[..., keep])
    assert np.all(got[..., ~keep] == 0)
  assert reached == pytest.approx(float(learner.cost_model.flops_kept(pruned.params)))
  cli = str(tmp_path / "cli")  # the command line's --pattern_from, on a config.json that has no such key
  config_json = os.path.join(dense_dir, "config.json")
  saved = json.load(open(config_json))
  del saved["prune"]["pattern_from"]
  json.dump(saved, open(config_json, "w"))
  done = subprocess.run([sys.executable, "experiments/prune.py", f"--from={dense_dir}", f"--workdir={cli}",
                         f"--pattern_from={learned_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "PYTHONPATH": ROOT})
  assert done.returncode == 0 and f"(the pattern of {learned_dir})" in done.stdout, done.stderr[-2000:]
  assert load_config(cli)["prune"]["pattern_from"] == learned_dir
  _, from_cli = trained_network(cli)
  assert [np.asarray(a).tolist() for a in learner.spec.alive(from_cli.params)] == [k.tolist() for k in kept]

  for pattern, message in ((str(tmp_path / "nowhere"), "nowhere"),
                           (_wider_heads_run(config, str(tmp_path / "other")), "network differs")):
    with pytest.raises((ConfigError, CheckpointError), match=message):
      prune_run(dense_dir, str(tmp_path / "refused"), with_overrides(config, **{"prune.pattern_from": pattern}))
    assert not os.path.exists(tmp_path / "refused")


def _wider_heads_run(config, workdir):
  """`workdir`, trained with `config`'s heads twice as wide: another network."""
  train(with_overrides(config, **{"model.head_width": config.model.head_width * 2}), workdir, progress=False)
  return workdir
