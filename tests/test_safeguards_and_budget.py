"""Safeguards (λ bounds, channel floor, skipped steps, runaway warning) and the budget's pieces, checked by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import synthetic
from msp.meta import MetaObjective, sum_over_episodes
from msp.models import MultiTaskNet, ResNet
from msp.parallel import make_mesh, replicate
from msp.sparsity.budget import TREND_DECAY, BudgetState
from msp.sparsity import Budget, CostModel, GroupSpec, block_soft_threshold, floor_engaged, sparsity_stats
from msp.sparsity.prox import spared_by_cap, spared_by_kept_fraction
from msp.train import MetaTrainState, make_meta_train_step
from msp.train.setup import build_meta_learner
from msp.train.safeguards import LambdaWatch, Safeguards
from tests.meta_fixtures import tiny_problem


def test_floor_keeps_the_largest_groups_untouched():
  rng = np.random.default_rng(0)
  params = {"backbone": {"l": {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 6)), jnp.float32)},
                               "norm": {"scale": jnp.ones(6), "bias": jnp.zeros(6)}}}}
  spec = GroupSpec.from_params(params)
  norms = np.asarray(spec.group_norms(params)[0])
  top2 = np.argsort(norms)[-2:]
  huge = jnp.asarray([1e3])
  out = block_soft_threshold(params, spec, huge, min_alive=2)
  out_norms = np.asarray(spec.group_norms(out)[0])
  np.testing.assert_allclose(out_norms[top2], norms[top2], rtol=1e-6)
  assert np.all(out_norms[np.setdiff1d(np.arange(6), top2)] == 0)
  assert int(floor_engaged(params, spec, huge, 2)[0]) == 2
  assert int(floor_engaged(params, spec, jnp.asarray([0.0]), 2)[0]) == 0
  # without the floor the same threshold kills the layer
  assert int(sparsity_stats(block_soft_threshold(params, spec, huge), spec)["alive_channels"][0]) == 0


@pytest.mark.parametrize("thresholds,binds", [((0.9, 0.5), True), ((0.8, 0.45), False)])
def test_budget_cap_zeroes_only_the_lowest_ranked_groups(thresholds, binds):
  rng = np.random.default_rng(1)
  kernels = {"a": rng.normal(size=(3, 3, 2, 8)), "b": rng.normal(size=(3, 3, 8, 6)) * 0.5}
  kernels["a"][..., 0] = 0.0  # a group that is dead already counts against the cap
  params = {"backbone": {name: {"conv": {"kernel": jnp.asarray(k, jnp.float32)},
                                "norm": {"scale": jnp.ones(k.shape[-1]), "bias": jnp.zeros(k.shape[-1])}}
                         for name, k in kernels.items()}}
  spec = GroupSpec.from_params(params)
  thresholds = jnp.asarray(thresholds)
  cap = 6
  out = block_soft_threshold(params, spec, thresholds, cap=lambda n, t: spared_by_cap(n, t, cap))
  # numpy, by hand: the group norm includes BatchNorm's scale (1) and bias (0); rank norm / (τ·w) over both layers
  norms = [np.sqrt(np.sum(kernels[n] ** 2, axis=(0, 1, 2)) + 1.0) * (np.sum(kernels[n] ** 2, axis=(0, 1, 2)) > 0)
           for n in ("a", "b")]
  ratios = [nr / (float(t) * layer.weight) for nr, t, layer in zip(norms, thresholds, spec.layers)]
  flat = np.concatenate(ratios)
  allowed = flat < np.sort(flat)[cap]
  expected_dead = allowed & (flat <= 1.0)
  # 10 groups are at or below their threshold with (0.9, 0.5), 4 with (0.8, 0.45)
  assert expected_dead.sum() == (cap if binds else (flat <= 1.0).sum()) and ((flat <= 1.0).sum() > cap) == binds
  got = np.concatenate([np.asarray(n) for n in spec.group_norms(out)])
  np.testing.assert_array_equal(got == 0, expected_dead)
  # spared groups are untouched; allowed survivors are shrunk by exactly τ·w
  np.testing.assert_allclose(got[~allowed], np.concatenate(norms)[~allowed], rtol=1e-6)
  shrunk = allowed & ~expected_dead
  shift = np.concatenate([np.full(l.num_groups, float(t) * l.weight) for t, l in zip(thresholds, spec.layers)])
  np.testing.assert_allclose(got[shrunk], np.concatenate(norms)[shrunk] - shift[shrunk], rtol=1e-5)


@pytest.mark.parametrize("floor", [0.0, 0.3, 0.61, 0.95, 1.0])
def test_kept_fraction_cap_lets_go_the_longest_prefix_of_the_ranking_that_keeps_the_floor(floor):
  rng = np.random.default_rng(3)
  norms = [jnp.asarray(rng.uniform(0.1, 2.0, size=g), jnp.float32) for g in (5, 8, 3)]
  norms[1] = norms[1].at[2].set(0.0)  # dead already: ranked first
  thresholds = [jnp.asarray(t, jnp.float32) for t in (0.5, 1.5, 0.8)]
  costs = [rng.uniform(1.0, 3.0, size=n.shape[0]) for n in norms]  # a cost per channel; kept = alive share of it
  kept = lambda alive: sum(jnp.sum(jnp.where(a, c, 0.0)) for a, c in zip(alive, costs)) / sum(c.sum() for c in costs)
  spared = spared_by_kept_fraction(norms, thresholds, kept, floor)
  # numpy, by scanning every prefix of the ranking: the longest one whose survivors keep ≥ floor
  ratios = np.concatenate([np.asarray(n) / float(t) for n, t in zip(norms, thresholds)])
  flat_costs = np.concatenate(costs)
  order = np.argsort(ratios, kind="stable")
  best = max(m for m in range(len(ratios) + 1) if flat_costs[order[m:]].sum() / flat_costs.sum() >= floor - 1e-6)
  expected = np.ones(len(ratios), bool)
  expected[order[:best]] = False
  np.testing.assert_array_equal(np.concatenate([np.asarray(s) for s in spared]), expected)


def test_a_flops_budgets_outer_prox_stops_at_its_target():
  net = _net("basic")
  variables = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  spec = GroupSpec.from_params(variables["params"])
  costs = CostModel.from_model(net, spec, 8)
  budget = Budget("flops_kept", 0.4, costs.channel_costs("flops"), costs, 0.1)
  huge = jnp.full(spec.num_layers, 1e3)  # without the cap every channel would die
  out = block_soft_threshold(variables["params"], spec, huge, cap=budget.prox_cap)
  alive = [np.asarray(a) for a in spec.alive(out)]
  assert float(costs.flops_kept(out)) >= 0.4
  # ranked: every removed group ranks below every survivor, by norm / (τ w)
  norms = [np.asarray(n) for n in spec.group_norms(variables["params"])]
  scales = [1e3 * l.weight for l in spec.layers]
  ratios = np.concatenate([n / scale for n, scale in zip(norms, scales)])
  survivors = np.concatenate(alive)
  assert ratios[~survivors].max() <= ratios[survivors].min()
  # maximal: any one more dead channel (of those the ranking let go next) would take the network below the target
  next_group = np.argmin(np.where(survivors, ratios, np.inf))
  fewer = survivors.copy()
  fewer[next_group] = False
  split = np.split(fewer, np.cumsum([l.num_groups for l in spec.layers])[:-1])
  assert float(costs.flops_kept_by_alive([jnp.asarray(a) for a in split])) < 0.4
  assert budget.prox_cap is not None and Budget(**{**budget.__dict__, "cap": False}).prox_cap is None


def test_clip_rho_and_outlier_rule():
  guard = Safeguards(lambda_min=1e-4, lambda_max=1.0, outlier_factor=5.0, outlier_warmup=3)
  rho, at_bound = guard.clip_rho(jnp.log(jnp.asarray([1e-6, 1e-2, 3.0])))
  np.testing.assert_allclose(jnp.exp(rho), [1e-4, 1e-2, 1.0], rtol=1e-5)
  np.testing.assert_array_equal(at_bound, [True, False, True])
  # with budget mode's log-scale σ, the bounds hold for λ = exp(ρ + σ), not for exp(ρ)
  sigma = 2.0
  rho, at_bound = guard.clip_rho(jnp.log(jnp.asarray([3e-5, 1e-2, 0.5])), sigma)
  np.testing.assert_allclose(jnp.exp(rho + sigma), [3e-5 * np.exp(sigma), 1e-2 * np.exp(sigma), 1.0], rtol=1e-5)
  np.testing.assert_array_equal(at_bound, [False, False, True])
  assert bool(guard.skip_step(jnp.nan, 1.0, 0)) and bool(guard.skip_step(jnp.inf, 1.0, 50))
  assert not bool(guard.skip_step(100.0, 1.0, 2))  # warm-up: outliers not yet judged
  assert bool(guard.skip_step(6.0, 1.0, 3)) and not bool(guard.skip_step(4.0, 1.0, 3))
  with pytest.raises(ValueError, match="min_channels"):
    Safeguards(min_channels=0)


def test_lambda_watch_warns_once_per_window():
  watch = LambdaWatch(("a", "b"), factor=10.0, window=20)
  assert watch.update(0, np.array([1e-3, 1e-3])) == []
  assert watch.update(10, np.array([2e-3, 1e-3])) == []
  warnings = watch.update(20, np.array([2e-2, 1e-3]))
  assert len(warnings) == 1 and "λ of a moved by ×20" in warnings[0]
  assert watch.update(25, np.array([3e-2, 1e-3])) == []  # same window: no repeat
  assert watch.update(50, np.array([3e-2, 1e-3])) == []  # stable again


def _net(block):
  backbone = ResNet(depths=(1, 1), widths=(4, 8), strides=(1, 2), block=block, stem_width=4)
  return MultiTaskNet(backbone, heads=(("a", "dense", 1),), head_width=4)


def test_flops_counted_by_hand_for_a_basic_resnet():
  net = _net("basic")
  variables = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  spec = GroupSpec.from_params(variables["params"])
  costs = CostModel.from_model(net, spec, 8)
  # stem 3→4 at 8×8, block1 4→4 twice at 8×8 (identity shortcut), block2 4→8 and 8→8 at 4×4 + 1×1 shortcut 4→8
  dense = 2 * (64 * 9 * 3 * 4 + 2 * 64 * 9 * 4 * 4 + 16 * 9 * 4 * 8 + 16 * 9 * 8 * 8 + 16 * 1 * 4 * 8)
  assert costs.dense_flops == dense
  assert float(costs.flops_kept(variables["params"])) == pytest.approx(1.0)
  # kill stem channel 0 only: the residual stream channel 0 stays alive through block1's conv2
  kill = lambda name, c: [jnp.ones(l.num_groups).at[c].set(0.0) if l.name == name else jnp.ones(l.num_groups)
                          for l in spec.layers]
  p1 = spec.scale_groups(variables["params"], kill("backbone/stage0_conv1", 0))
  want = dense - 2 * (64 * 9 * 3 * 1 + 64 * 9 * 1 * 4)  # the stem's output channel and block1/conv1's input
  assert float(costs.flops_kept(p1)) == pytest.approx(want / dense)
  # kill channel 0 in both stream contributors: block2's conv1 and shortcut lose that input channel too
  p2 = spec.scale_groups(p1, kill("backbone/stage1_block0/conv2", 0))
  want2 = want - 2 * (64 * 9 * 4 * 1) - 2 * (16 * 9 * 1 * 8 + 16 * 1 * 1 * 8)
  assert float(costs.flops_kept(p2)) == pytest.approx(want2 / dense)


@pytest.mark.parametrize("block", ["plain", "basic", "bottleneck"])
def test_channel_sources_agree_with_the_forward_pass(block):
  """A consumer's input channel is exactly zero iff that channel is dead in every source the graph names."""
  net = _net(block)
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  variables = net.init(jax.random.key(0), x, train=False)
  spec = GroupSpec.from_params(variables["params"])
  sources, _ = net.backbone.channel_sources()
  for consumer, srcs in sources.items():
    if not srcs:
      continue
    factors = [jnp.ones(l.num_groups).at[0].set(0.0) if l.name[len("backbone/"):] in srcs else jnp.ones(l.num_groups)
               for l in spec.layers]
    params = spec.scale_groups(variables["params"], factors)
    _, state = net.apply({**variables, "params": params}, x, train=False, capture_intermediates=True,
                         mutable=["intermediates"])
    node = state["intermediates"]["backbone"]
    # the consumer's input is the output of the block or stem conv feeding it: recover it through its conv
    kernel = variables["params"]["backbone"]
    for part in consumer.split("/"):
      node, kernel = node[part], kernel[part]
    conv_out = np.asarray(node["conv"]["__call__"][0])
    # Changing only input channel 0's weights must leave the conv output unchanged iff that channel is zero.
    k = kernel["conv"]["kernel"]
    bumped = jax.tree.map(lambda a: a, params)
    target = bumped["backbone"]
    for part in consumer.split("/"):
      target = target[part]
    target["conv"]["kernel"] = k.at[:, :, 0, :].add(1.0)
    _, state2 = net.apply({**variables, "params": bumped}, x, train=False, capture_intermediates=True,
                          mutable=["intermediates"])
    node2 = state2["intermediates"]["backbone"]
    for part in consumer.split("/"):
      node2 = node2[part]
    np.testing.assert_array_equal(np.asarray(node2["conv"]["__call__"][0]), conv_out, err_msg=consumer)


def _budget(objective, target_kind="channels_removed", target=0.5, dual_lr=0.1):
  model = MultiTaskNet(ResNet(depths=(1,), widths=(4,), strides=(2,), block="basic", stem_width=4,
                              activation="gelu"), heads=(("reg", "dense", 2), ("attr", "attribute", 2)), head_width=4)
  costs = CostModel.from_model(model, objective.spec, 8)
  return Budget(target_kind, target, costs.channel_costs("flops"), costs, dual_lr, scale_lr=0.0, horizon=0.0)


def test_budget_measure_gap_and_dual_step():
  objective, params, _, _, _ = tiny_problem(dtype=jnp.float32)
  budget = _budget(objective, target=0.5, dual_lr=0.1)
  spec = objective.spec
  assert float(budget.measure(params)) == 0.0 and float(budget.gap(params)) == pytest.approx(0.5)
  state = BudgetState.create().replace(mu=jnp.asarray(0.2))
  new = budget.update(state, params)
  assert float(new.mu) == pytest.approx(0.25) and float(new.gap) == pytest.approx(0.5)
  assert float(new.lambda_scale) == pytest.approx(0.0)  # scale_lr = 0 here
  dead = spec.scale_groups(params, [jnp.zeros(l.num_groups) for l in spec.layers])
  assert float(budget.measure(dead)) == pytest.approx(1.0)
  after = budget.update(new.replace(mu=jnp.asarray(0.02)), dead)
  assert float(after.mu) == 0.0  # at_most: μ never goes negative
  # the trend is the smoothed change of the gap: here it went from 0.5 to −0.5 in one step
  assert float(after.trend) == pytest.approx((1 - TREND_DECAY) * (-1.0))
  ahead = Budget(**{**budget.__dict__, "scale_lr": 0.1, "horizon": 10.0})
  before = new.replace(mu=jnp.asarray(0.3))
  after_ahead = ahead.update(before, dead)
  predicted = -0.5 + 10.0 * float(after_ahead.trend)  # the gap 10 steps ahead at its current trend
  assert float(after_ahead.mu) == pytest.approx(0.3 + 0.1 * predicted)
  assert float(after_ahead.lambda_scale) == pytest.approx(0.1 * predicted)
  reg = float(budget.regularizer(params))
  by_hand = sum(c * l.weight * float(jnp.sum(n)) for c, l, n in zip(budget.costs, spec.layers, spec.group_norms(params)))
  scale = sum(c * l.weight * l.num_groups for c, l in zip(budget.costs, spec.layers))
  assert reg == pytest.approx(by_hand / scale, rel=1e-5)
  flops_budget = _budget(objective, "flops_kept", 0.4)
  assert float(flops_budget.gap(params)) == pytest.approx(0.6)


def test_budget_with_zero_mu_equals_the_faithful_objective(x64):
  # The two programs are compiled (each episode is jitted) and fuse differently, so they agree to rounding: float64.
  objective, params, stats, rho, mb = tiny_problem(dtype=jnp.float64)
  budgeted = MetaObjective(**{**objective.__dict__, "budget": _budget(objective)})
  faithful = sum_over_episodes(objective, params, rho, stats, mb)
  with_zero_mu = sum_over_episodes(budgeted, params, rho, stats, mb, mu=jnp.asarray(0.0))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15), faithful, with_zero_mu)
  pushed = sum_over_episodes(budgeted, params, rho, stats, mb, mu=jnp.asarray(1.0))
  assert np.all(np.asarray(pushed["grad_log_lambdas"]) < np.asarray(faithful["grad_log_lambdas"]))  # μR pushes every λ up


def test_non_finite_meta_gradient_skips_the_step():
  objective, params, stats, rho, mb = tiny_problem(dtype=jnp.float32)
  mesh = make_mesh(1)
  step = make_meta_train_step(objective, mesh, optax.constant_schedule(1e-2))
  host = jax.tree.map(np.array, (params, stats, rho))
  state = replicate(MetaTrainState.create(params=host[0], batch_stats=host[1], rho=host[2], tx=optax.adam(1e-2),
                                          rho_tx=optax.adam(0.1)), mesh)
  before = jax.tree.map(np.array, state)
  bad = mb.replace(query={**mb.query, "reg": mb.query["reg"].at[0, 0, 0, 0, 0].set(jnp.nan)})
  state, metrics = step(state, bad)
  assert bool(metrics["skipped"]) and int(state.step) == 1 and int(state.accepted_steps) == 0
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), before.params)
  state, metrics = step(state, mb)
  assert not bool(metrics["skipped"]) and int(state.accepted_steps) == 1
  assert not np.allclose(np.asarray(state.rho), before.rho)


def test_a_flops_budget_prices_each_layers_lambda_by_its_channel_cost():
  config = synthetic.get_config("budget,flops=0.25,tiny")
  learner = build_meta_learner(config)
  rho = np.asarray(learner.init_state(jax.random.key(0)).rho)
  costs = learner.cost_model.channel_costs("flops")
  np.testing.assert_allclose(np.exp(rho), config.sparsity.lambda_init * costs, rtol=1e-5)
  assert np.ptp(costs) > 0  # the layers' prices differ
  config.budget.target_kind = "channels_removed"
  np.testing.assert_allclose(np.exp(np.asarray(build_meta_learner(config).init_state(jax.random.key(0)).rho)),
                             config.sparsity.lambda_init, rtol=1e-6)
