r"""Meta-sparsity on the embedded `synthetic_scenes` dataset (rendered rooms, 64², built on first use).

Command:   python experiments/meta_train.py --config=experiments/configs/synthetic.py[:VARIANT[,tiny]] --workdir=DIR
           then  python experiments/evaluate.py --workdir=DIR
           and   python experiments/adapt_unseen.py --workdir=DIR
Hardware:  2 CPU cores (no accelerator); the dataset builds once, in about 35 s.
Runtime:   about 0.45 s per outer step after a 40 s compile: 600 steps in 5–6 min; `make quickstart` (this config's
           `budget` variant, evaluation and adaptation of the untrained and the trained network) about 10 min.
Expected:  `budget`: group sparsity at its 50 % target (measured 50.0 %), segmentation, depth, normals and the
           unseen edges clearly better than the untrained network (README, "Quickstart" and "What λ does on synthetic
           scenes" give the measured tables).
Variants (item 6 of the end-to-end issue; each also combines with `tiny`, a few steps of a smaller net for tests):
  meta_sparsity      learned per-layer λ, first-order meta-gradient (exact at K = 1), inner prox
  meta_sparsity_global  the same with one λ for the whole backbone
  reference          the authors' prototype objective (no inner prox, λΩ(θ_K) in the outer loss)
  budget             meta_sparsity with a budget: 50 % of the backbone's channels removed (the default)
  maml               meta-learning without sparsity (λ = 0)
  dense_mtl          dense multi-task training, no meta-learning
  fixed_lambda       multi-task training with fixed-λ group lasso and the proximal step (Less is More)
Seen tasks: segmentation (6 classes), depth, normals and two image attributes (camera looks down, checkered floor);
unseen (adapt_unseen.py): edges and the other six attributes.
"""
import ml_collections

from data_pipelines.synthetic_scenes.render import ATTRIBUTE_NAMES, CLASS_NAMES
from experiments.configs import common

SEEN_ATTRIBUTES = ("camera_looks_down", "checkered_floor")
VARIANTS = ("meta_sparsity", "meta_sparsity_global", "reference", "budget", "maml", "dense_mtl", "fixed_lambda")


def get_config(arg: str = "budget") -> ml_collections.ConfigDict:
  """arg: a variant from VARIANTS, optionally followed by `,tiny` (e.g. `budget,tiny`)."""
  variant, *modifiers = arg.split(",")
  if variant not in VARIANTS or any(m != "tiny" for m in modifiers):
    raise ValueError(f"unknown variant {arg!r} of synthetic.py; choose one of {VARIANTS}, optionally + ',tiny'")
  c = common.method_defaults()
  c.variant = arg
  c.seed = 0
  c.steps = 600
  c.log_every = 20
  c.checkpoint_every = 200
  c.num_devices = ml_collections.FieldReference(None, field_type=int)

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic_scenes"
  c.data.config = "res64"
  c.data.overrides = {}  # SyntheticScenesConfig fields replacing the named config's (sizes, resolution)
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.num_threads = 2
  c.data.prefetch = 4
  c.image_size = 64

  c.model = ml_collections.ConfigDict()
  c.model.backbone = dict(block="basic", stem="simple", stem_width=16, depths=(1, 1, 1), widths=(16, 32, 64),
                          strides=(2, 2, 2), dilations=(1, 1, 1), activation="relu")
  c.model.head_width = 32
  c.model.dtype = "float32"

  c.tasks = {
      "segmentation": dict(kind="segmentation", num_classes=len(CLASS_NAMES)),
      "depth": dict(kind="depth"),
      "normals": dict(kind="normals"),
      "edges": dict(kind="edges"),
      **{name: dict(kind="attributes", num_attributes=1) for name in ATTRIBUTE_NAMES},
  }
  c.seen_tasks = ("segmentation", "depth", "normals", *SEEN_ATTRIBUTES)
  c.unseen_tasks = ("edges", *(a for a in ATTRIBUTE_NAMES if a not in SEEN_ATTRIBUTES))
  if "tiny" in modifiers:  # fewer heads: a quicker compile for tests
    c.seen_tasks = ("segmentation", "depth", "checkered_floor")
    c.unseen_tasks = ("edges", "has_sphere")

  c.meta.support_size = 4  # 8 + 8 doubles the step time (1.0 s vs 0.43 s on 2 cores)
  c.meta.query_size = 4

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.max_examples = ml_collections.FieldReference(None, field_type=int)  # None: the whole split

  c.adapt = ml_collections.ConfigDict()
  c.adapt.tasks = ml_collections.FieldReference(None, field_type=tuple)  # None: all of unseen_tasks
  c.adapt.train = "heads"  # or "heads_and_backbone" (surviving channels only)
  c.adapt.steps = 300
  c.adapt.batch_size = 16
  c.adapt.lr = 1e-3
  c.adapt.train_fraction = 1.0

  if variant == "meta_sparsity_global":
    c.sparsity.lambda_mode = "global"
  elif variant == "reference":
    c.meta.mode = "reference"
  elif variant == "budget":
    c.budget.enabled = True
  elif variant == "maml":
    c.sparsity.enabled = False
  elif variant in ("dense_mtl", "fixed_lambda"):
    c.meta.mode = "joint"
    c.meta.task_sampling = "all"
    c.sparsity.enabled = variant == "fixed_lambda"
    c.sparsity.learn_lambda = False
    c.sparsity.lambda_init = 0.05

  if "tiny" in modifiers:
    c.data.overrides = dict(resolution=32, num_train=64, num_validation=8, num_test=16)
    c.image_size = 32
    c.steps = 4
    c.log_every = 1
    c.checkpoint_every = 2
    c.model.backbone.update(stem_width=4, depths=(1, 1), widths=(4, 8), strides=(2, 2), dilations=(1, 1))
    c.model.head_width = 8
    c.meta.episodes = 2
    c.meta.support_size = c.meta.query_size = 2
    c.eval.batch_size = 8
    c.eval.max_examples = 16
    c.adapt.steps = 2
    c.adapt.batch_size = 4
  return c
