r"""Meta-sparsity on the embedded `synthetic_scenes` dataset (rendered rooms, 64², built on first use).

Command:   python experiments/meta_train.py --config=experiments/configs/synthetic.py[:VARIANT[,tiny][,KEY=VALUE...]] \
             --workdir=DIR
           then  python experiments/evaluate.py --workdir=DIR
           and   python experiments/adapt_unseen.py --workdir=DIR
Hardware:  2 CPU cores (no accelerator); the dataset builds once, in about 35 s.
Runtime:   about 0.45 s per outer step after a 40 s compile: 600 steps in 5–6 min; `make quickstart` (this config's
           `budget` variant, evaluation and adaptation of the untrained and the trained network) about 10 min.
           The study's baselines (single_task, thin_dense, magnitude) are not timed yet.
Expected:  `budget`: group sparsity at its 50 % target (measured 50.0 %), segmentation, depth, normals and the
           unseen edges clearly better than the untrained network (the README's quickstart output and
           docs/results/synthetic_variants.md give the measured tables). `thin_dense`: widths 11/22/44 (stem 11), 49.96 % of
           the backbone's FLOPs at flops=0.5; 7/15/30 (stem 7), 23.6 % at flops=0.25. The baselines' scores are
           not measured yet.
Variants:  meta_sparsity, meta_sparsity_global, reference, budget (the default), maml, dense_mtl, fixed_lambda (the
           paper's), single_task, thin_dense, magnitude (the comparison study's); described in
           experiments/configs/common.py. Keys: `budget,flops=F` (F of the backbone's FLOPs kept instead of 50 % of
           the channels removed), `fixed_lambda,lambda=V` (default 0.05), `single_task,task=T` (a seen task, default
           segmentation), `thin_dense,flops=F` (default 0.5), `magnitude,flops=F,scope=uniform|global` (defaults 0.5,
           uniform). `tiny`, a few steps of a smaller net for tests, combines with each, e.g.
           `synthetic.py:thin_dense,flops=0.25,tiny`.
Seen tasks: segmentation (6 classes), depth, normals and two image attributes (camera looks down, checkered floor);
unseen (adapt_unseen.py): edges and the other six attributes.
"""
import ml_collections

from data_pipelines.synthetic_scenes.render import ATTRIBUTE_NAMES, CLASS_NAMES
from experiments.configs import common
from msp.train.config import defaults

SEEN_ATTRIBUTES = ("camera_looks_down", "checkered_floor")
SEEN_TASKS = ("segmentation", "depth", "normals", *SEEN_ATTRIBUTES)
VARIANTS = common.VARIANTS
PAPER_VARIANTS = common.PAPER_VARIANTS  # what experiments/reports/synthetic_variants.py compares


def get_config(arg: str = "budget") -> ml_collections.ConfigDict:
  """arg: VARIANT[,tiny][,KEY=VALUE...], a variant from common.VARIANTS with its keys (e.g. `budget,tiny`,
  `thin_dense,flops=0.25`)."""
  parsed = common.parse_arg(arg, "synthetic.py", SEEN_TASKS)
  c = common.experiment_defaults(arg)

  c.data = defaults("data").data  # data.overrides: SyntheticScenesConfig fields (sizes, resolution)
  c.data.name = "synthetic_scenes"
  c.data.config = "res64"
  c.data.num_threads = 2
  c.data.augment = dict(enabled=False)  # rendered at the model's size; see nyuv2.py for the augmenting pipeline
  c.image_size = 64

  c.model.backbone = dict(block="basic", stem="simple", stem_width=16, depths=(1, 1, 1), widths=(16, 32, 64),
                          strides=(2, 2, 2), dilations=(1, 1, 1), activation="relu")
  c.model.head_width = 32

  c.tasks = {
      "segmentation": dict(kind="segmentation", num_classes=len(CLASS_NAMES)),
      "depth": dict(kind="depth"),
      "normals": dict(kind="normals"),
      # A fraction of the diagonal as the standard evaluation has it; at 64² the published 0.0075–0.011 fall under
      # one pixel (exact hits only), so 0.016 (1.45 px at 64²) admits the 8 neighbours of a true edge pixel.
      "edges": dict(kind="edges", max_dist=0.016),
      **{name: dict(kind="attributes", num_attributes=1) for name in ATTRIBUTE_NAMES},
  }
  c.seen_tasks = SEEN_TASKS
  c.unseen_tasks = ("edges", *(a for a in ATTRIBUTE_NAMES if a not in SEEN_ATTRIBUTES))

  c.meta.support_size = 4  # 8 + 8 doubles the step time (1.0 s vs 0.43 s on 2 cores)
  c.meta.query_size = 4

  if "tiny" in parsed.modifiers:
    c.data.overrides = dict(resolution=32, num_train=64, num_validation=8, num_test=16)
    c.image_size = 32
    c.seen_tasks = ("segmentation", "depth", "checkered_floor")  # fewer heads: a quicker compile
    c.unseen_tasks = ("edges", "has_sphere")
    common.tiny_model(c)
  common.apply_variant(c, parsed)
  return c
