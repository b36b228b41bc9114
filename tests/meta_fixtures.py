"""A tiny smooth (gelu, float64-capable) multi-task problem shared by the meta-gradient tests."""
import jax
import jax.numpy as jnp
import numpy as np

from msp.meta import MetaBatch, MetaObjective, MultiTaskLoss
from msp.models import MultiTaskNet, ResNet
from msp.sparsity import GroupSpec
from msp.tasks import build_task

TASKS = (build_task("reg", "regression", channels=2), build_task("attr", "attributes", num_attributes=2))
SIZE = 8


def tiny_problem(dtype=jnp.float64, inner_steps=1, mode="second_order", sparse=True, remat=False, episodes=2,
                 batch=3, seed=0, inner_lr=0.05, kill_fraction=0.3):
  """Returns (objective, params, batch_stats, rho, meta_batch).

  ρ is chosen per layer so that the K inner proxes together zero roughly `kill_fraction` of each layer's groups
  (each prox shrinks a group's norm by the threshold, so the threshold is the fraction's quantile / K).
  """
  backbone = ResNet(depths=(1,), widths=(4,), strides=(2,), block="basic", stem_width=4, activation="gelu",
                    dtype=dtype)
  model = MultiTaskNet(backbone, heads=tuple((t.name, t.head, t.channels) for t in TASKS), head_width=4)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, SIZE, SIZE, 3), dtype), train=False)
  spec = GroupSpec.from_params(variables["params"])
  objective = MetaObjective(MultiTaskLoss(model.apply, TASKS), spec, inner_steps=inner_steps, inner_lr=inner_lr,
                            mode=mode, sparse=sparse, remat=remat)
  norms = spec.group_norms(variables["params"])
  rho = jnp.log(jnp.stack([jnp.quantile(n, kill_fraction) / (inner_steps * inner_lr * layer.weight)
                           for n, layer in zip(norms, spec.layers)])).astype(dtype)
  rng = np.random.default_rng(seed)

  def split(n):
    return {"image": rng.uniform(size=(episodes, n, SIZE, SIZE, 3)),
            "reg": rng.normal(size=(episodes, n, SIZE, SIZE, 2)),
            "attr": rng.integers(0, 2, size=(episodes, n, 2)).astype(np.float64)}

  masks = np.ones((episodes, len(TASKS)))
  masks[1::2, 1] = 0.0
  to = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)
  meta_batch = MetaBatch(support=to(split(batch)), query=to(split(batch)), task_mask=to(masks))
  return objective, variables["params"], variables["batch_stats"], rho, meta_batch


def adapted_group_sparsity(objective, params, rho, batch_stats, meta_batch):
  """(L,) fraction of zero groups per layer after adapting to episode 0 (to check the prox really acts)."""
  from msp.sparsity import sparsity_stats
  fast = objective.adapt(params, rho, batch_stats, meta_batch.episode(0))[0]
  return np.asarray(sparsity_stats(fast, objective.spec)["group_sparsity"])


def mean_meta_loss(objective, params, rho, batch_stats, meta_batch):
  """The meta-loss: mean over episodes of the query loss after adaptation (a plain loop, for finite differences)."""
  losses = [objective.episode_loss(params, rho, batch_stats, meta_batch.episode(e))[0]
            for e in range(meta_batch.num_episodes)]
  return sum(losses) / len(losses)
