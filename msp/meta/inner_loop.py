"""The inner loop: K steps of SGD on the support loss, each followed by an optional prox (where λ acts)."""
from typing import Any, Callable

import jax

from msp.meta.objective import MultiTaskLoss

Params = Any


def adapt(loss: MultiTaskLoss, params: Params, batch_stats: Params, support: dict[str, jax.Array],
          task_mask: jax.Array, *, steps: int, lr: float, prox: Callable[[Params], Params] | None = None,
          stop_inner_gradient: bool = False, remat: bool = False, update_batch_stats: bool = False,
          ) -> tuple[Params, Params]:
  """Adapts (θ, φ) to one episode's support batch:  p ← prox(p − lr·∇_p loss(p; support)), `steps` times.

  support: "image" (B, H, W, 3) + targets; task_mask: (T,). `prox` maps params → params (None: no prox).
  stop_inner_gradient: treat each inner gradient as a constant (first-order meta-gradient).
  remat: recompute each step's activations in the backward pass instead of storing them (memory ∝ K·|params|
  instead of K·activations). The steps then run as a `lax.scan` (unrolled, XLA kept every step's activations
  alive even with `jax.checkpoint`); without remat they are K unrolled copies, because XLA:CPU runs convolutions
  inside a loop body through a generic loop, 15–37× slower (docs/benchmarks.md).
  update_batch_stats: thread BatchNorm running averages through the steps (default: adaptation leaves them
  unchanged). Returns (adapted params, batch_stats).
  """
  def step(carry, _):
    p, stats = carry
    grads, (_, new_stats) = jax.grad(loss, has_aux=True)(p, stats, support, task_mask)
    if stop_inner_gradient:
      grads = jax.lax.stop_gradient(grads)
    p = jax.tree.map(lambda w, g: w - lr * g, p, grads)
    if prox is not None:
      p = prox(p)
    return (p, new_stats if update_batch_stats else stats), None

  if remat:
    (params, batch_stats), _ = jax.lax.scan(jax.checkpoint(step), (params, batch_stats), None, length=steps)
    return params, batch_stats
  for _ in range(steps):
    (params, batch_stats), _ = step((params, batch_stats), None)
  return params, batch_stats
