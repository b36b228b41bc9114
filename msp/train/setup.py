"""From a validated config to the objects a run needs: tasks, model, groups, objective, state, jitted step."""
import dataclasses
import pickle
import zipfile
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from msp.meta import MetaBatch, MetaObjective, MultiTaskLoss, init_rho
from msp.models import MultiTaskNet, build_model
from msp.models.resnet import ResNet
from msp.models.torchvision_import import backbone_variables, load_state_dict, replace_backbone
from msp.parallel import DATA_AXIS, make_mesh, replicate
from msp.sparsity import Budget, CostModel, GroupSpec, flops_budget, group_spec
from msp.tasks import Task, build_tasks
from msp.train.config import ConfigError, validate_config
from msp.train.safeguards import Safeguards
from msp.train.state import MetaTrainState
from msp.train.step import make_meta_train_step

OPTIMIZERS = {
    "adam": optax.adam,
    "sgd": lambda lr: optax.sgd(lr, momentum=0.9),
}


@dataclasses.dataclass(frozen=True)
class MetaLearner:
  """Everything static about a run (the state is separate, so that it alone is checkpointed)."""
  config: ml_collections.ConfigDict
  tasks: tuple[Task, ...]
  model: MultiTaskNet
  spec: GroupSpec
  objective: MetaObjective
  mesh: jax.sharding.Mesh
  outer_lr: Callable[[jax.Array], jax.Array]
  train_step: Callable
  safeguards: Safeguards
  cost_model: CostModel
  tx: optax.GradientTransformation
  rho_tx: optax.GradientTransformation

  def init_state(self, rng: jax.Array) -> MetaTrainState:
    """A fresh state: initial variables for images of `config.image_size`, ρ = log(lambda_init), replicated.

    In budget mode with a FLOPs target (and per-layer λ), ρ_ℓ = log(lambda_init · c_ℓ), c_ℓ the budget's channel
    costs: a channel's price starts at its cost.

    With `model.init_from` (a torchvision ResNet state dict), the backbone's parameters and BatchNorm statistics are
    that state dict's; the heads are initialised from `rng` either way. ConfigError (one line, naming the path) when
    it cannot be read or does not fit the backbone.
    Every state of a learner shares its optimisers (static fields), so restored states reuse the compiled step.
    """
    cfg = self.config
    size = cfg.image_size
    # read first, so that a bad file fails before anything compiles
    imported = None if cfg.model.init_from is None else torchvision_backbone(cfg.model.init_from, self.model.backbone)
    init = jax.jit(lambda key: self.model.init(key, jnp.zeros((1, size, size, 3), jnp.float32), train=False))
    variables = init(rng)
    if imported is not None:
      variables = replace_backbone(variables, imported)
    rho = init_rho(self.spec.num_layers, cfg.sparsity.lambda_mode, cfg.sparsity.lambda_init)
    budget = self.objective.budget
    if flops_budget(cfg) and cfg.sparsity.lambda_mode == "per_layer":
      rho = rho + jnp.log(jnp.asarray(budget.costs, rho.dtype))
    state = MetaTrainState.create(params=variables["params"], batch_stats=variables["batch_stats"], rho=rho,
                                  tx=self.tx, rho_tx=self.rho_tx)
    return replicate(state, self.mesh)

  def abstract_inputs(self) -> tuple[MetaTrainState, MetaBatch]:
    """Shapes, dtypes and shardings of `train_step`'s inputs (a state and a meta-batch of `config.meta`'s sizes),
    without weights or data: `learner.train_step.lower(*learner.abstract_inputs()).compile()` compiles the step
    ahead of time, e.g. for `memory_analysis()`. Targets are shaped as `data_pipelines.episodes.TargetSpec` makes
    them: a segmentation task's int32 labels are its logits' shape without the class axis; every other target
    (float32) has its output's shape."""
    cfg, m = self.config, self.config.meta
    state = jax.eval_shape(self.init_state, jax.random.key(0))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(self.mesh, P())),
                         state)
    episodes = NamedSharding(self.mesh, P(DATA_AXIS))
    spec = lambda shape, dtype: jax.ShapeDtypeStruct((m.episodes, *shape), dtype, sharding=episodes)

    def batch(size: int) -> dict[str, jax.ShapeDtypeStruct]:
      images = jnp.zeros((size, cfg.image_size, cfg.image_size, 3))
      outputs, _ = jax.eval_shape(lambda: self.model.init_with_output(jax.random.key(0), images, train=False))
      targets = {t.name: spec(outputs[t.name].shape[:-1], jnp.int32) if t.kind == "segmentation"
                 else spec(outputs[t.name].shape, jnp.float32) for t in self.tasks}
      return {"image": spec(images.shape, jnp.float32), **targets}

    return state, MetaBatch(support=batch(m.support_size), query=batch(m.query_size),
                            task_mask=spec((len(self.tasks),), jnp.float32))


def torchvision_backbone(path: str, backbone: ResNet) -> dict:
  """{"params", "batch_stats"} of `backbone` from the torchvision state dict at `path` (`model.init_from`; see
  `msp.models.torchvision_import`); ConfigError naming the key and the path when the file cannot be read or does not
  fit `backbone` (e.g. a stem other than "torchvision", another architecture)."""
  try:
    return backbone_variables(load_state_dict(path), backbone)
  except (OSError, ImportError, ValueError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
    raise ConfigError(f"model.init_from={path!r}: {' '.join(str(e).split())}") from e


def build_meta_learner(config: ml_collections.ConfigDict) -> MetaLearner:
  """Validates `config` and builds the run's static pieces (see experiments/configs/*.py for the fields)."""
  validate_config(config)
  tasks = build_tasks(config.tasks, config.seen_tasks)
  model = build_model(config.model, tasks)
  size = config.image_size
  sp = config.sparsity
  try:
    spec = group_spec(config, model)
  except ValueError as e:  # an include that matches nothing, or a naming the rule cannot read
    raise ConfigError(str(e)) from e
  cost_model = CostModel.from_model(model, spec, size)
  safeguards = Safeguards(**config.safeguards)
  budget = None
  if config.budget.enabled:
    b = config.budget
    budget = Budget(target_kind=b.target_kind, target=b.target, costs=cost_model.channel_costs(b.cost),
                    cost_model=cost_model, dual_lr=b.dual_lr, cap=b.cap)
  m = config.meta
  objective = MetaObjective(
      loss=MultiTaskLoss(model.apply, tasks), spec=spec, inner_steps=m.inner_steps, inner_lr=m.inner_lr,
      mode=m.mode, sparse=sp.enabled, remat=m.remat, inner_batch_stats=m.inner_batch_stats,
      min_alive=safeguards.min_channels, budget=budget)
  mesh = make_mesh(config.num_devices)
  outer_lr = optax.constant_schedule(config.optim.lr)
  step = make_meta_train_step(objective, mesh, outer_lr, safeguards=safeguards, learn_lambda=sp.learn_lambda,
                              episode_loop=m.episode_loop, cost_model=cost_model,
                              freeze_pattern=sp.freeze_pattern)
  return MetaLearner(config=config, tasks=tasks, model=model, spec=spec, objective=objective, mesh=mesh,
                     outer_lr=outer_lr, train_step=step, safeguards=safeguards, cost_model=cost_model,
                     tx=OPTIMIZERS[config.optim.name](outer_lr),
                     rho_tx=optax.adam(config.optim.rho_lr))
