"""Meta-test on unseen tasks: new heads on the meta-learned backbone, fine-tuned with its sparsity pattern fixed.

Before fine-tuning, BatchNorm's averages are recalibrated on the evaluation protocol's calibration examples (the
averages kept in meta-training belong to other weights; see `msp.train.evaluation`). `train="heads"` then trains
only the new heads; the backbone runs in inference mode on those averages and stays exactly as meta-trained.
`train="heads_and_backbone"` also fine-tunes the backbone's surviving channels: after every update the groups that
were zero are zeroed again, so zero groups stay zero and the pruned network is unchanged in shape; BatchNorm uses
batch statistics while fine-tuning and is recalibrated again afterwards.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax
import tqdm
from flax import traverse_util

from msp.models import build_model
from msp.parallel import is_primary
from msp.sparsity import GroupSpec
from msp.tasks import Task, build_tasks

TRAINABLE = ("heads", "heads_and_backbone")


def attach_heads(model_config, task_configs, meta_tasks: Sequence[Task], new_names: Sequence[str], variables: dict,
                 image_size: int, seed: int):
  """A model with the meta-trained tasks' heads plus fresh heads for `new_names`, and its variables.

  variables: the meta-trained {"params", "batch_stats"}; their backbone and heads are copied, new heads are
  initialised from `seed`. Returns (model, tasks of the new heads, variables).
  """
  new_tasks = build_tasks(task_configs, new_names)
  model = build_model(model_config, (*meta_tasks, *new_tasks))
  fresh = model.init(jax.random.key(seed), jnp.zeros((1, image_size, image_size, 3)), train=False)
  params = {**fresh["params"], **variables["params"]}
  batch_stats = {**fresh.get("batch_stats", {}), **variables["batch_stats"]}  # new heads may have BatchNorm (ASPP)
  return model, new_tasks, {"params": params, "batch_stats": batch_stats}


def fine_tune(model, variables: dict, tasks: Sequence[Task], spec: GroupSpec, batches: Callable[[int], dict], *,
              train: str, steps: int, lr: float, progress: bool = True) -> tuple[dict, list[float]]:
  """Adam on Σ_t L_t over `tasks`, `steps` updates; returns (variables, losses).

  batches(step) → {"image": (B, H, W, 3), <task name>: target} with every task of `tasks`.

  train: "heads" (only the heads of `tasks`) or "heads_and_backbone" (also the backbone's alive groups).
  The zero groups of `spec` stay exactly zero in both modes.
  """
  if train not in TRAINABLE:
    raise ValueError(f"config.adapt.train={train!r}; choose one of {TRAINABLE}")
  trained_prefixes = {f"head_{t.name}" for t in tasks} | ({"backbone"} if train == "heads_and_backbone" else set())
  labels = traverse_util.path_aware_map(lambda path, _: "train" if path[0] in trained_prefixes else "freeze",
                                        variables["params"])
  tx = optax.multi_transform({"train": optax.adam(lr), "freeze": optax.set_to_zero()}, labels)
  masks = spec.alive(variables["params"])  # the pattern kept through every update
  with_backbone = train == "heads_and_backbone"

  def loss_fn(params, batch_stats, batch):
    v = {"params": params, "batch_stats": batch_stats}
    if with_backbone:
      outputs, updates = model.apply(v, batch["image"], train=True, mutable=["batch_stats"])
      batch_stats = updates["batch_stats"]
    else:
      outputs = model.apply(v, batch["image"], train=False)
    return sum(t.loss(outputs[t.name], batch[t.name]) for t in tasks), batch_stats

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = spec.scale_groups(optax.apply_updates(params, updates), masks)
    return params, batch_stats, opt_state, loss

  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  losses = []
  for s in tqdm.trange(steps, desc=f"adapt ({train})", disable=not (progress and is_primary()), dynamic_ncols=True):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, batches(s))
    losses.append(float(loss))
  return {"params": params, "batch_stats": batch_stats}, losses
