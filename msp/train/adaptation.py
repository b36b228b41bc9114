"""Meta-test on unseen tasks: new heads on the meta-learned backbone, fine-tuned with its sparsity pattern fixed.

Before fine-tuning, BatchNorm's averages are recalibrated on the evaluation protocol's calibration examples (the
averages kept in meta-training belong to other weights; see `msp.train.evaluation`). `train="heads"` then trains
only the new heads; the backbone runs in inference mode on those averages and stays exactly as meta-trained.
`train="heads_and_backbone"` also fine-tunes the backbone's surviving channels: after every update the groups that
were zero are zeroed again, so zero groups stay zero and the pruned network is unchanged in shape; BatchNorm uses
batch statistics while fine-tuning and is recalibrated again afterwards.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import traverse_util

from data_pipelines.datasets import Prefix
from data_pipelines.episodes import batch_sampler
from msp.models import build_model
from msp.sparsity import GroupSpec
from msp.tasks import Task, build_tasks
from msp.train.evaluation import calibrated, calibration_images, eval_batches, evaluate, evaluate_seen

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


def alive_masks(params, spec: GroupSpec) -> list[jax.Array]:
  """Per sparsified layer, (G_ℓ,) float 1 for the groups that are not all zero, 0 for the removed ones."""
  return [a.astype(jnp.float32) for a in spec.alive(params)]


def fine_tune(model, variables: dict, tasks: Sequence[Task], spec: GroupSpec, source, targets, *, train: str,
              steps: int, batch_size: int, lr: float, seed: int, progress: bool = True) -> tuple[dict, list[float]]:
  """Adam on Σ_t L_t over `tasks` with batches of `batch_size` drawn from `source`; returns (variables, losses).

  train: "heads" (only the heads of `tasks`) or "heads_and_backbone" (also the backbone's alive groups).
  The zero groups of `spec` stay exactly zero in both modes.
  """
  if train not in TRAINABLE:
    raise ValueError(f"config.adapt.train={train!r}; choose one of {TRAINABLE}")
  trained_prefixes = {f"head_{t.name}" for t in tasks} | ({"backbone"} if train == "heads_and_backbone" else set())
  labels = traverse_util.path_aware_map(lambda path, _: "train" if path[0] in trained_prefixes else "freeze",
                                        variables["params"])
  tx = optax.multi_transform({"train": optax.adam(lr), "freeze": optax.set_to_zero()}, labels)
  masks = alive_masks(variables["params"], spec)
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

  batches = batch_sampler(source, targets, batch_size, seed)
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  losses = []
  for s in tqdm.trange(steps, desc=f"adapt ({train})", disable=not progress, dynamic_ncols=True):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state, batches(s))
    losses.append(float(loss))
  return {"params": params, "batch_stats": batch_stats}, losses


def training_subset(source, fraction: float):
  """The first ⌈fraction·N⌉ examples of a random-access source (at least 1): the fine-tuning data."""
  if not 0 < fraction <= 1:
    raise ValueError(f"config.adapt.train_fraction={fraction} must lie in (0, 1]")
  return Prefix(source, max(1, int(np.ceil(fraction * len(source)))))


def adapt_unseen(run, state, tasks: Sequence[str] | None = None, with_seen: bool = True,
                 progress: bool = True) -> dict:
  """Fine-tunes heads for `tasks` (default `config.adapt.tasks`, else `config.unseen_tasks`) on the meta-trained
  state of `run` (a `msp.train.run.Run`) and evaluates them, and the seen tasks, on the evaluation split.

  Returns {"unseen": Results, "seen": Results (None unless `with_seen`), "losses": fine-tuning losses per step,
  "variables": the adapted {"params", "batch_stats"} of the model with every head, "tasks": the new Tasks}.
  """
  c = run.config
  tasks = tuple(tasks or c.adapt.tasks or c.unseen_tasks)
  model, new_tasks, variables = attach_heads(c.model, c.tasks, run.learner.tasks, tasks,
                                             {"params": state.params, "batch_stats": state.batch_stats},
                                             c.image_size, c.seed)
  targets = run.dataset.targets(c.tasks, tasks)
  source = training_subset(run.dataset.source(c.data.train_split), c.adapt.train_fraction)
  calibration = calibration_images(run)
  variables, losses = fine_tune(model, calibrated(model.apply, variables, calibration, c.eval.batch_size), new_tasks,
                                run.learner.spec, source, targets, train=c.adapt.train, steps=c.adapt.steps,
                                batch_size=c.adapt.batch_size, lr=c.adapt.lr, seed=c.seed, progress=progress)
  if c.adapt.train == "heads_and_backbone":
    variables = calibrated(model.apply, variables, calibration, c.eval.batch_size)
  batches, num_batches = eval_batches(run.dataset.source(c.data.eval_split), targets, c)
  unseen = evaluate(model.apply, variables, new_tasks, batches, num_batches, progress)
  seen = None
  if with_seen:
    seen_params = {k: v for k, v in variables["params"].items() if k in state.params}
    seen = evaluate_seen(run, state.replace(params=seen_params, batch_stats=variables["batch_stats"]),
                         progress=progress)
  return {"unseen": unseen, "seen": seen, "losses": losses, "variables": variables, "tasks": new_tasks}
