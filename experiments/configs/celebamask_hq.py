r"""Meta-sparsity on CelebAMask-HQ (faces): seen face-part segmentation, Male, Smiling; unseen four more attributes.

Command:   python experiments/meta_train.py \
             --config=experiments/configs/celebamask_hq.py[:VARIANT[,CLASSES][,paper][,tiny]] \
             --workdir=DIR --config.data.manual_dir=/path/to/CelebAMask-HQ
           then  python experiments/evaluate.py --workdir=DIR ; python experiments/adapt_unseen.py --workdir=DIR
           The dataset is built from the download on first use (README, "CelebAMask-HQ").
Hardware:  one GPU (the default net, a dilated ResNet-18-like backbone at 256²); `tiny` runs on CPU for tests.
           `paper`: `python benchmarks/meta_step_memory.py --config=experiments/configs/celebamask_hq.py:budget,paper`
           prints the meta-step's compiled memory.
Runtime:   not measured yet on real data (no GPU run has been made with this config).
Expected:  not measured yet; the README's CelebAMask-HQ section will carry the table once a run exists.
Variants:  meta_sparsity, meta_sparsity_global, reference, budget (the default), maml, dense_mtl, fixed_lambda
           (experiments/configs/common.py). Class modifiers: `parts19` (default: background + 18 parts) or
           `hair_skin3` (the authors' background/hair/skin). `paper`: the paper's network (the authors' dilated
           ResNet-D-50, ASPP and conv + pooled-MLP heads; `paper_torchvision`: torchvision-style backbone;
           configs/common.py `paper_model`). `tiny`: a few steps of a tiny net on 16² images.
Tasks:     the authors' six attributes (PAPER.md §6): seen Male, Smiling; unseen Arched_Eyebrows, High_Cheekbones,
           Big_Lips, Wearing_Lipstick. All 40 attributes are defined as tasks, so `--config.unseen_tasks` may name
           any of them.
Data:      training images get a random zoom (1–1.2) and colour jitter; no flips, because a mirrored face swaps
           left and right parts (l_eye/r_eye, ...), which a flip of the label map alone would get wrong.
"""
import ml_collections

from data_pipelines.celebamask_hq import ATTRIBUTE_NAMES, CLASS_NAMES
from experiments.configs import common

SEEN_ATTRIBUTES = ("Male", "Smiling")
UNSEEN_ATTRIBUTES = ("Arched_Eyebrows", "High_Cheekbones", "Big_Lips", "Wearing_Lipstick")


def get_config(arg: str = "budget") -> ml_collections.ConfigDict:
  """arg: VARIANT[,CLASSES][,paper|paper_torchvision][,tiny], e.g. `budget`, `meta_sparsity,hair_skin3,paper`."""
  variant, modifiers = common.parse_arg(arg, "celebamask_hq.py",
                                        modifiers=("tiny", *common.PAPER_MODIFIERS, *CLASS_NAMES))
  chosen = [m for m in modifiers if m in CLASS_NAMES]
  if len(chosen) > 1:
    raise ValueError(f"celebamask_hq.py:{arg} names several class sets {chosen}; choose one")
  classes = chosen[0] if chosen else "parts19"
  c = common.experiment_defaults(arg)
  c.steps = 20000
  c.log_every = 50
  c.checkpoint_every = 1000

  c.data = ml_collections.ConfigDict()
  c.data.name = "celebamask_hq"
  c.data.config = classes
  c.data.overrides = {}  # CelebAMaskHQConfig fields (resolution, split, fractions, seed, max_examples)
  c.data.manual_dir = ml_collections.FieldReference(None, field_type=str)  # the download (needed to build)
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.train_split = "train"
  c.data.eval_split = "test"  # select checkpoints on "validation", report on "test"
  c.data.num_threads = 4
  c.data.prefetch = 4
  c.data.augment = dict(enabled=True, scale=(1.0, 1.2), flip=0.0, brightness=0.2, contrast=0.2, saturation=0.2,
                        hue=0.02)
  c.image_size = 256

  c.model = ml_collections.ConfigDict()
  c.model.backbone = dict(block="basic", stem="deep", stem_width=64, depths=(2, 2, 2, 2), widths=(64, 128, 256, 512),
                          strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), activation="relu")
  c.model.head_width = 128
  c.model.dtype = "float32"

  c.tasks = {
      "segmentation": dict(kind="segmentation", num_classes=len(CLASS_NAMES[classes])),
      **{name: dict(kind="attributes", num_attributes=1) for name in ATTRIBUTE_NAMES},
  }
  c.seen_tasks = ("segmentation", *SEEN_ATTRIBUTES)
  c.unseen_tasks = UNSEEN_ATTRIBUTES
  c.meta.support_size = 8
  c.meta.query_size = 8
  common.apply_variant(c, variant)
  for modifier in modifiers:
    if modifier in common.PAPER_MODIFIERS:
      common.paper_model(c, common.PAPER_MODIFIERS[modifier])

  if "tiny" in modifiers:
    c.image_size = 16
    c.data.num_threads = 2
    c.data.overrides = dict(resolution=16)
    common.tiny_model(c)
    c.meta.support_size = c.meta.query_size = 1  # the fixture download's official train split holds 2 images
    c.adapt.batch_size = 2
  return c
