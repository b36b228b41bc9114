"""Group lasso, prox and stats against numpy closed forms written here."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msp.sparsity import GroupSpec, block_soft_threshold, group_lasso, proximal_group_lasso, sparsity_stats


def _params(rng, shapes=((3, 3, 2, 5), (1, 1, 5, 4))):
  """Two ConvNorm-shaped layers under backbone/ plus a head that must stay untouched."""
  params = {"backbone": {}, "head_x": {"out": {"kernel": rng.normal(size=(4, 2))}}}
  for i, shape in enumerate(shapes):
    params["backbone"][f"layer{i}"] = {
        "conv": {"kernel": rng.normal(size=shape)},
        "norm": {"scale": rng.normal(size=shape[-1]), "bias": rng.normal(size=shape[-1])}}
  return params


def _numpy_out_channel_prox(params, thresholds):
  """Independent closed form: θ_g·max(0, 1 − τ√|g|/‖θ_g‖) for out-channel groups incl. BN scale and bias."""
  out = jax.tree.map(np.array, params)
  for i, name in enumerate(sorted(params["backbone"])):
    layer = out["backbone"][name]
    k, s, b = layer["conv"]["kernel"], layer["norm"]["scale"], layer["norm"]["bias"]
    size = k[..., 0].size + 2
    for c in range(k.shape[-1]):
      norm = np.sqrt(np.sum(k[..., c] ** 2) + s[c] ** 2 + b[c] ** 2)
      factor = max(0.0, 1.0 - thresholds[i] * np.sqrt(size) / norm) if norm > 0 else 0.0
      k[..., c] *= factor
      s[c] *= factor
      b[c] *= factor
  return out


def _norms(layer):
  k, s, b = layer["conv"]["kernel"], layer["norm"]["scale"], layer["norm"]["bias"]
  return np.sqrt(np.sum(k ** 2, axis=(0, 1, 2)) + s ** 2 + b ** 2)


def _edge_case_params(rng):
  """Layer 0 gets a group exactly at the threshold, one just below, one just above, and an all-zero group."""
  params = _params(rng)
  layer = params["backbone"]["layer0"]
  tau0 = 0.1
  w = np.sqrt(3 * 3 * 2 + 2)
  norms = _norms(layer)
  for c, t in {1: tau0 * w * (1 - 1e-6), 2: tau0 * w * (1 + 1e-3)}.items():
    layer["conv"]["kernel"][..., c] *= t / norms[c]
    layer["norm"]["scale"][c] *= t / norms[c]
    layer["norm"]["bias"][c] *= t / norms[c]
  # exactly at the threshold: a single non-zero entry, since sqrt(x·x) == |x| in IEEE arithmetic
  layer["conv"]["kernel"][..., 0] = 0.0
  layer["conv"]["kernel"][0, 0, 0, 0] = tau0 * w
  layer["norm"]["scale"][0] = layer["norm"]["bias"][0] = 0.0
  layer["conv"]["kernel"][..., 3] = 0.0
  layer["norm"]["scale"][3] = layer["norm"]["bias"][3] = 0.0
  return params, np.array([tau0, 0.3])


def _linear_probe(spec, params, seed):
  """f(θ, τ) = <prox_τ(θ), r> for a fixed random r: a scalar whose gradient exercises every entry of the prox."""
  r = jax.tree.map(lambda x: jnp.asarray(np.random.default_rng(seed).normal(size=np.shape(x))), params)
  return lambda p, t: sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(block_soft_threshold(p, spec, t)),
                                                         jax.tree.leaves(r)))


def test_prox_matches_numpy_closed_form_with_edge_cases(x64):
  params, tau = _edge_case_params(np.random.default_rng(0))
  spec = GroupSpec.from_params(params)
  got = block_soft_threshold(jax.tree.map(jnp.asarray, params), spec, jnp.asarray(tau))
  want = _numpy_out_channel_prox(params, tau)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14), got, want)
  norms0 = _norms(jax.tree.map(np.asarray, got)["backbone"]["layer0"])
  assert norms0[0] == 0 and norms0[1] == 0 and norms0[3] == 0 and norms0[2] > 0
  np.testing.assert_array_equal(got["head_x"]["out"]["kernel"], params["head_x"]["out"]["kernel"])


def test_prox_gradient_is_zero_not_nan_at_zero_and_threshold_groups(x64):
  params, tau = _edge_case_params(np.random.default_rng(1))
  spec = GroupSpec.from_params(params)
  f = _linear_probe(spec, params, seed=2)
  value, (gp, gt) = jax.value_and_grad(f, argnums=(0, 1))(jax.tree.map(jnp.asarray, params), jnp.asarray(tau))
  assert np.isfinite(value)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves((gp, gt)))
  kernel_grad = np.asarray(gp["backbone"]["layer0"]["conv"]["kernel"])
  assert np.all(kernel_grad[..., [0, 1, 3]] == 0) and np.any(kernel_grad[..., 2] != 0)


def test_prox_gradients_match_central_differences(x64):
  params = jax.tree.map(jnp.asarray, _params(np.random.default_rng(8)))
  spec = GroupSpec.from_params(params)
  tau = jnp.asarray([1.0, 1.0])  # kills some groups of each layer, shrinks the rest
  assert 0 < float(sparsity_stats(block_soft_threshold(params, spec, tau), spec)["group_sparsity_total"]) < 1
  f = _linear_probe(spec, params, seed=9)
  gp, gt = jax.grad(f, argnums=(0, 1))(params, tau)
  eps = 1e-6
  for i in range(2):
    e = jnp.zeros(2).at[i].set(eps)
    np.testing.assert_allclose(gt[i], (f(params, tau + e) - f(params, tau - e)) / (2 * eps), rtol=1e-6)
  v = jax.tree.map(lambda x: jnp.asarray(np.random.default_rng(10).normal(size=x.shape)), params)
  shifted = lambda s: jax.tree.map(lambda p, d: p + s * d, params, v)
  fd = (f(shifted(eps), tau) - f(shifted(-eps), tau)) / (2 * eps)
  np.testing.assert_allclose(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(v))), fd,
                             rtol=1e-6)


def test_group_lasso_penalty_matches_numpy():
  params = _params(np.random.default_rng(3))
  spec = GroupSpec.from_params(params)
  want = [np.sqrt(k) * np.sum(_norms(params["backbone"][name]))
          for k, name in zip((3 * 3 * 2 + 2, 5 + 2), ("layer0", "layer1"))]
  np.testing.assert_allclose(group_lasso(params, spec), want, rtol=1e-5)


def test_in_channel_groups():
  params = jax.tree.map(lambda x: x.astype(np.float32), _params(np.random.default_rng(4)))
  spec = GroupSpec.from_params(params, grouping="in_channel")
  assert [layer.num_groups for layer in spec.layers] == [2, 5]
  assert [layer.group_size for layer in spec.layers] == [3 * 3 * 5, 4]
  k = params["backbone"]["layer0"]["conv"]["kernel"]
  want0 = np.sqrt(3 * 3 * 5) * np.sum(np.sqrt(np.sum(k ** 2, axis=(0, 1, 3))))
  np.testing.assert_allclose(group_lasso(params, spec)[0], want0, rtol=1e-5)
  tau = jnp.asarray([1e3, 0.0])  # kills every input channel of layer 0, leaves layer 1 unchanged
  out = block_soft_threshold(params, spec, tau)
  assert np.all(np.asarray(out["backbone"]["layer0"]["conv"]["kernel"]) == 0)
  np.testing.assert_array_equal(out["backbone"]["layer0"]["norm"]["scale"], params["backbone"]["layer0"]["norm"]["scale"])
  np.testing.assert_allclose(out["backbone"]["layer1"]["conv"]["kernel"], params["backbone"]["layer1"]["conv"]["kernel"],
                             rtol=1e-6)


def test_include_regex_that_matches_nothing_is_an_error():
  with pytest.raises(ValueError, match="matches no 4-D conv kernel"):
    GroupSpec.from_params(_params(np.random.default_rng(5)), include=r"^nothing/")


def test_stats_counted_by_hand():
  params = _params(np.random.default_rng(6))
  layer0 = params["backbone"]["layer0"]
  layer0["conv"]["kernel"][..., 1:3] = 0
  layer0["norm"]["scale"][1:3] = 0
  layer0["norm"]["bias"][1:3] = 0
  layer0["norm"]["bias"][4] = 0  # a lone zero scalar is not a zero group
  stats = sparsity_stats(params, GroupSpec.from_params(params))
  np.testing.assert_array_equal(stats["alive_channels"], [3, 4])
  np.testing.assert_allclose(stats["group_sparsity"], [2 / 5, 0])
  np.testing.assert_allclose(stats["group_sparsity_total"], 2 / 9)
  total = (3 * 3 * 2 + 2) * 5 + (5 + 2) * 4
  np.testing.assert_allclose(stats["param_sparsity"], (2 * (3 * 3 * 2 + 2) + 1) / total)


def test_optax_proximal_transform_equals_prox_of_the_sgd_step():
  rng = np.random.default_rng(7)
  params = jax.tree.map(jnp.asarray, _params(rng))
  grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
  spec = GroupSpec.from_params(params)
  lr, lambdas = 0.1, jnp.asarray([8.0, 0.5])
  tx = optax.chain(optax.sgd(lr), proximal_group_lasso(spec, lambdas, lr))
  updates, _ = tx.update(grads, tx.init(params), params)
  got = optax.apply_updates(params, updates)
  stepped = jax.tree.map(lambda p, g: np.asarray(p) - lr * np.asarray(g), params, grads)
  want = _numpy_out_channel_prox(stepped, np.asarray(lr * lambdas))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
  assert sparsity_stats(got, spec)["group_sparsity_total"] > 0


def _numpy_relative_prox(params, tau):
  """Independent closed form of the relative prox: layer ℓ's threshold is τ_ℓ √|g| times the mean of its non-zero
  group norms."""
  means = []
  for name in sorted(params["backbone"]):
    norms = _norms(params["backbone"][name])
    means.append(np.mean(norms[norms > 0]))
  return _numpy_out_channel_prox(params, np.asarray(tau) * np.asarray(means))


def test_relative_prox_thresholds_in_units_of_the_mean_alive_group_norm(x64):
  params, tau = _edge_case_params(np.random.default_rng(11))  # layer 0 has an all-zero group, left out of the mean
  spec = GroupSpec.from_params(params, relative=True)
  got = block_soft_threshold(jax.tree.map(jnp.asarray, params), spec, jnp.asarray(tau))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14), got,
               _numpy_relative_prox(params, tau))
  absolute = block_soft_threshold(jax.tree.map(jnp.asarray, params), GroupSpec.from_params(params), jnp.asarray(tau))
  assert not np.allclose(absolute["backbone"]["layer1"]["conv"]["kernel"], got["backbone"]["layer1"]["conv"]["kernel"])


def test_relative_prox_commutes_with_scaling_a_layer_and_the_absolute_one_does_not(x64):
  params = jax.tree.map(jnp.asarray, _params(np.random.default_rng(12)))
  scaled = jax.tree.map(lambda x: x, params)
  scaled["backbone"]["layer1"] = jax.tree.map(lambda x: 7.0 * x, params["backbone"]["layer1"])
  tau = jnp.asarray([0.05, 0.05])
  for relative, commutes in ((True, True), (False, False)):
    spec = GroupSpec.from_params(params, relative=relative)
    a = block_soft_threshold(scaled, spec, tau)["backbone"]["layer1"]["conv"]["kernel"]
    b = 7.0 * block_soft_threshold(params, spec, tau)["backbone"]["layer1"]["conv"]["kernel"]
    assert np.allclose(a, b, rtol=1e-12) == commutes


def test_relative_prox_gradient_in_tau_matches_central_differences(x64):
  params = jax.tree.map(jnp.asarray, _params(np.random.default_rng(13)))
  spec = GroupSpec.from_params(params, relative=True)
  tau = jnp.asarray([0.3, 0.3])  # kills some groups of each layer, shrinks the rest
  assert 0 < float(sparsity_stats(block_soft_threshold(params, spec, tau), spec)["group_sparsity_total"]) < 1
  f = _linear_probe(spec, params, seed=14)
  gt = jax.grad(f, argnums=1)(params, tau)
  eps = 1e-6
  for i in range(2):
    e = jnp.zeros(2).at[i].set(eps)
    np.testing.assert_allclose(gt[i], (f(params, tau + e) - f(params, tau - e)) / (2 * eps), rtol=1e-6)
