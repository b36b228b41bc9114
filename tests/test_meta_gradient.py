"""Meta-gradients against independent computations: finite differences, first-order by hand, plain MAML."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msp.meta import EPISODE_LOOPS, sum_over_episodes
from tests.meta_fixtures import adapted_group_sparsity, mean_meta_loss, tiny_problem


def _library_grads(objective, params, rho, batch_stats, meta_batch):
  sums = sum_over_episodes(objective, params, rho, batch_stats, meta_batch)
  e = meta_batch.num_episodes
  return sums["loss"] / e, jax.tree.map(lambda g: g / e, sums["grad_params"]), sums["grad_log_lambdas"] / e


def _vdot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("inner_steps", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_second_order_matches_central_differences(x64, inner_steps):
  objective, params, stats, rho, mb = tiny_problem(inner_steps=inner_steps)
  sparsity = adapted_group_sparsity(objective, params, rho, stats, mb)
  assert np.all(sparsity < 1) and np.mean(sparsity) > 0.1, sparsity  # the prox acts, and leaves survivors
  loss, g_params, g_rho = _library_grads(objective, params, rho, stats, mb)
  f = jax.jit(lambda p, r: mean_meta_loss(objective, p, r, stats, mb))
  np.testing.assert_allclose(loss, f(params, rho), rtol=1e-12)
  eps = 1e-6
  for i in range(rho.shape[0]):
    e = jnp.zeros_like(rho).at[i].set(eps)
    fd = (f(params, rho + e) - f(params, rho - e)) / (2 * eps)
    assert abs(fd) > 1e-6 and abs(g_rho[i] - fd) <= 1e-4 * abs(fd), (i, g_rho[i], fd)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  v = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
  shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, v)
  fd = (f(shift(eps), rho) - f(shift(-eps), rho)) / (2 * eps)
  np.testing.assert_allclose(_vdot(g_params, v), fd, rtol=1e-4)


def _test_prox(params, thresholds):
  """An independent out-channel block soft-threshold over backbone ConvNorms (kernel + BN scale and bias)."""
  params = jax.tree.map(lambda x: x, params)  # shallow copies of the dict levels
  layers = []

  def visit(node, path):
    if isinstance(node, dict) and "conv" in node and "norm" in node:
      layers.append(("/".join(path), node))
    elif isinstance(node, dict):
      for key in node:
        visit(node[key], path + (key,))

  visit(params["backbone"], ("backbone",))
  layers.sort(key=lambda item: item[0])  # the fixture's names sort the same naturally and as strings
  for tau, (_, node) in zip(thresholds, layers):
    k, s, b = node["conv"]["kernel"], node["norm"]["scale"], node["norm"]["bias"]
    sq = jnp.sum(k * k, axis=(0, 1, 2)) + s * s + b * b
    alive = sq > (tau * np.sqrt(k[..., 0].size + 2)) ** 2
    norm = jnp.sqrt(jnp.where(alive, sq, 1.0))
    factor = jnp.where(alive, 1.0 - tau * np.sqrt(k[..., 0].size + 2) / norm, 0.0)
    node["conv"]["kernel"], node["norm"]["scale"], node["norm"]["bias"] = k * factor, s * factor, b * factor
  return params


def _test_loss(model_apply, params, batch_stats, batch, mask):
  """Masked sum of MSE (reg) and BCE-with-logits (attr), written out here."""
  out, _ = model_apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                       mutable=["batch_stats"])
  mse = jnp.mean((out["reg"] - batch["reg"]) ** 2)
  z, y = out["attr"], batch["attr"]
  bce = jnp.mean(jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z))))
  return mask[0] * mse + mask[1] * bce


def test_first_order_equals_constant_inner_gradient_computation(x64):
  objective, params, stats, rho, mb = tiny_problem(inner_steps=3, mode="first_order")
  assert np.all(adapted_group_sparsity(objective, params, rho, stats, mb) < 1)
  apply, lr = objective.loss.apply_fn, objective.inner_lr
  _, g_params, g_rho = _library_grads(objective, params, rho, stats, mb)
  want_p, want_r = None, None
  for e in range(mb.num_episodes):
    ep = mb.episode(e)
    # 1) the inner trajectory, numerically, to record the inner gradients as constants
    p, constants = params, []
    for _ in range(objective.inner_steps):
      g = jax.grad(_test_loss, argnums=1)(apply, p, stats, ep.support, ep.task_mask)
      constants.append(g)
      p = _test_prox(jax.tree.map(lambda w, d: w - lr * d, p, g), lr * jnp.exp(rho))

    # 2) the query loss as a function of (θ, ρ) with those gradients fixed
    def query_loss(p, r):
      for g in constants:
        p = _test_prox(jax.tree.map(lambda w, d: w - lr * d, p, g), lr * jnp.exp(r))
      return _test_loss(apply, p, stats, ep.query, ep.task_mask)

    gp, gr = jax.grad(query_loss, argnums=(0, 1))(params, rho)
    want_p = gp if want_p is None else jax.tree.map(jnp.add, want_p, gp)
    want_r = gr if want_r is None else want_r + gr
  n = mb.num_episodes
  np.testing.assert_allclose(g_rho, want_r / n, rtol=1e-9, atol=1e-12)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b / n, rtol=1e-8, atol=1e-11), g_params, want_p)
  assert np.all(np.abs(np.asarray(g_rho)) > 0)


def test_second_order_without_prox_equals_plain_maml(x64):
  objective, params, stats, rho, mb = tiny_problem(inner_steps=3, sparse=False)
  apply, lr, k = objective.loss.apply_fn, objective.inner_lr, objective.inner_steps
  loss, g_params, g_rho = _library_grads(objective, params, rho, stats, mb)

  def maml(p, ep):
    for _ in range(k):
      p = jax.tree.map(lambda w, d: w - lr * d, p, jax.grad(_test_loss, argnums=1)(apply, p, stats, ep.support,
                                                                                    ep.task_mask))
    return _test_loss(apply, p, stats, ep.query, ep.task_mask)

  n = mb.num_episodes
  want_loss = sum(maml(params, mb.episode(e)) for e in range(n)) / n
  want = jax.grad(lambda p: sum(maml(p, mb.episode(e)) for e in range(n)) / n)(params)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), g_params, want)
  np.testing.assert_array_equal(g_rho, np.zeros_like(g_rho))


def test_joint_mode_is_plain_multi_task_training_on_support_and_query(x64):
  """joint: no inner loop; the loss at θ on support ∪ query, and λ gets no gradient."""
  objective, params, stats, rho, mb = tiny_problem(inner_steps=2, mode="joint")
  apply = objective.loss.apply_fn
  loss, g_params, g_rho = _library_grads(objective, params, rho, stats, mb)

  def joint(p, ep):
    union = {k: jnp.concatenate([ep.support[k], ep.query[k]]) for k in ep.support}
    return _test_loss(apply, p, stats, union, ep.task_mask)

  n = mb.num_episodes
  want = jax.grad(lambda p: sum(joint(p, mb.episode(e)) for e in range(n)) / n)(params)
  np.testing.assert_allclose(loss, sum(joint(params, mb.episode(e)) for e in range(n)) / n, rtol=1e-12)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), g_params, want)
  np.testing.assert_array_equal(g_rho, np.zeros_like(g_rho))


def test_reference_mode_rho_gradient_is_lambda_times_penalty(x64):
  """reference: no inner prox, first-order, λΩ(θ_K) in the outer loss ⇒ ∂/∂ρ_ℓ = λ_ℓ Ω_ℓ(θ_K) exactly."""
  objective, params, stats, rho, mb = tiny_problem(inner_steps=2, mode="reference")
  apply, lr = objective.loss.apply_fn, objective.inner_lr
  _, _, g_rho = _library_grads(objective, params, rho, stats, mb)
  want = 0.0
  for e in range(mb.num_episodes):
    ep, p = mb.episode(e), params
    for _ in range(objective.inner_steps):
      p = jax.tree.map(lambda w, d: w - lr * d, p, jax.grad(_test_loss, argnums=1)(apply, p, stats, ep.support,
                                                                                    ep.task_mask))
    penalties = []
    for layer in objective.spec.layers:
      node = p
      for key in layer.name.split("/"):
        node = node[key]
      k, s, b = node["conv"]["kernel"], node["norm"]["scale"], node["norm"]["bias"]
      penalties.append(np.sqrt(k[..., 0].size + 2) * jnp.sum(jnp.sqrt(jnp.sum(k * k, (0, 1, 2)) + s * s + b * b)))
    want = want + jnp.exp(rho) * jnp.stack(penalties)
  np.testing.assert_allclose(g_rho, want / mb.num_episodes, rtol=1e-9)
  assert np.all(np.asarray(g_rho) > 0)


@pytest.mark.slow  # remat runs the inner loop as a scan, which XLA:CPU compiles and runs slowly
def test_remat_changes_memory_not_results():
  results, temp_bytes = {}, {}
  for remat in (False, True):
    objective, params, stats, rho, mb = tiny_problem(dtype=jnp.float32, inner_steps=6, remat=remat, batch=8)
    fn = jax.jit(lambda p, r: sum_over_episodes(objective, p, r, stats, mb))
    compiled = fn.lower(params, rho).compile()
    temp_bytes[remat] = compiled.memory_analysis().temp_size_in_bytes
    results[remat] = compiled(params, rho)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), results[False], results[True])
  assert temp_bytes[True] < temp_bytes[False], temp_bytes


def test_episode_loops_agree():
  objective, params, stats, rho, mb = tiny_problem(dtype=jnp.float32, episodes=3, mode="first_order")
  results = {loop: jax.jit(lambda p, r, loop=loop: sum_over_episodes(objective, p, r, stats, mb, loop))(params, rho)
             for loop in EPISODE_LOOPS}
  for loop in ("map",):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), results[loop],
                 results["unroll"])
  # against a plain Python sum of the episodes, each computed on its own
  single = [objective.episode_value_and_grad(params, rho, stats, 0.0, mb.episode(e)) for e in range(3)]
  np.testing.assert_allclose(results["map"]["loss"], sum(s["loss"] for s in single), rtol=1e-5)
  np.testing.assert_allclose(results["map"]["grad_log_lambdas"], sum(s["grad_log_lambdas"] for s in single), rtol=1e-4, atol=1e-7)
