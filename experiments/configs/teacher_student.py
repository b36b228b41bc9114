"""Meta-sparsity on teacher–student regression (random tensors): a sparse teacher, a dense student to prune.

Command:   python experiments/teacher_student.py --config=experiments/configs/teacher_student.py[:budget|:tiny]
Hardware:  2 CPU cores: `default` (second-order, 100 steps) about 1.5 min, `budget` (first-order, 400 steps) about
           2 min.
Expected:  test MSE after adaptation well below 1 (targets have unit variance); λ per layer printed. `default`
           (faithful objective) leaves the network dense; `budget` (target: 50 % of channels removed) ends
           around 45–50 % group sparsity with no layer below its floor.
Variants:  `default`, `budget`, `tiny` (a few steps of a smaller net: for tests).
"""
import ml_collections

from experiments.configs import common


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
  c = common.method_defaults()
  c.seed = 0
  c.image_size = 16
  c.steps = 100
  c.log_every = 25
  c.num_devices = ml_collections.FieldReference(None, field_type=int)

  c.model = ml_collections.ConfigDict()
  c.model.backbone = dict(block="plain", stem="simple", stem_width=32, depths=(1, 1), widths=(32, 32),
                          strides=(1, 1), dilations=(1, 1), activation="relu")
  c.model.head_width = 16
  c.model.dtype = "float32"

  c.tasks = {f"task{i}": dict(kind="regression", channels=1) for i in range(4)}
  c.seen_tasks = tuple(sorted(c.tasks))
  c.teacher = dict(alive_per_layer=(8, 8, 8), seed=1, pool_size=ml_collections.FieldReference(None, field_type=int))

  c.budget.target = 0.75
  c.meta.mode = "second_order"
  c.meta.inner_lr = 0.1

  if variant == "budget":
    c.steps = 400
    c.log_every = 50
    c.meta.mode = "first_order"  # exact λ-gradient at K = 1, 3× faster than second_order here
    c.budget.enabled = True
    c.budget.target = 0.5
  elif variant == "tiny":
    c.steps = 3
    c.log_every = 1
    c.model.backbone.update(stem_width=8, widths=(8, 8))
    c.teacher.alive_per_layer = (2, 2, 2)
    c.meta.episodes = 2
    c.meta.support_size = c.meta.query_size = 2
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} of teacher_student.py; choose default, budget or tiny")
  return c
