r"""Meta-sparsity on CelebAMask-HQ (faces): seen face-part segmentation, Male, Smiling; unseen four more attributes.

Command:   python experiments/meta_train.py \
             --config=experiments/configs/celebamask_hq.py[:VARIANT[,CLASSES][,paper][,tiny][,KEY=VALUE...]] \
             --workdir=DIR --config.data.manual_dir=/path/to/CelebAMask-HQ
           then  python experiments/evaluate.py --workdir=DIR ; python experiments/adapt_unseen.py --workdir=DIR
           The dataset is built from the download on first use (docs/datasets.md, "CelebAMask-HQ").
Hardware:  one GPU (the default net, a dilated ResNet-18-like backbone at 256²); `tiny` runs on CPU for tests.
           `paper`: `python benchmarks/meta_step_memory.py --config=experiments/configs/celebamask_hq.py:budget,paper`
           prints the meta-step's compiled memory.
Runtime:   not measured yet on real data (no GPU run has been made with this config).
Expected:  not measured yet; docs/datasets.md will carry the table once a run exists.
Variants:  meta_sparsity, meta_sparsity_global, reference, budget (the default), maml, dense_mtl, fixed_lambda,
           single_task, thin_dense, magnitude (experiments/configs/common.py). Keys: `budget,flops=F`,
           `fixed_lambda,lambda=V`, `single_task,task=segmentation|Male|Smiling`, `thin_dense,flops=F`,
           `magnitude,flops=F,scope=uniform|global` (e.g. `celebamask_hq.py:single_task,task=Male`). Class modifiers:
           `parts19` (default: background + 18 parts) or `hair_skin3` (the authors' background/hair/skin). `paper`:
           the paper's network (the authors' dilated ResNet-D-50, ASPP and conv + pooled-MLP heads;
           `paper_torchvision`: torchvision-style backbone; configs/common.py `paper_model`). `tiny`: a few steps of a
           tiny net on 16² images.
Tasks:     the authors' six attributes (docs/method.md §14): seen Male, Smiling; unseen Arched_Eyebrows,
           High_Cheekbones, Big_Lips, Wearing_Lipstick. All 40 attributes are defined as tasks, so
           `--config.unseen_tasks` may name any of them.
Data:      training images get a random zoom (1–1.2) and colour jitter; no flips, because a mirrored face swaps
           left and right parts (l_eye/r_eye, ...), which a flip of the label map alone would get wrong.
"""
import ml_collections

from data_pipelines.celebamask_hq import ATTRIBUTE_NAMES, CLASS_NAMES
from experiments.configs import common

SEEN_ATTRIBUTES = ("Male", "Smiling")
UNSEEN_ATTRIBUTES = ("Arched_Eyebrows", "High_Cheekbones", "Big_Lips", "Wearing_Lipstick")
SEEN_TASKS = ("segmentation", *SEEN_ATTRIBUTES)


def get_config(arg: str = "budget") -> ml_collections.ConfigDict:
  """arg: VARIANT[,CLASSES][,paper|paper_torchvision][,tiny][,KEY=VALUE...], e.g. `budget`,
  `meta_sparsity,hair_skin3,paper`, `magnitude,flops=0.25,scope=global`."""
  parsed = common.parse_arg(arg, "celebamask_hq.py", SEEN_TASKS,
                            modifiers=("tiny", *common.PAPER_MODIFIERS, *CLASS_NAMES))
  classes = common.chosen(f"celebamask_hq.py:{arg}", parsed.modifiers, CLASS_NAMES, "parts19", "class sets")
  c = common.experiment_defaults(arg)
  c.data = common.downloaded_data("celebamask_hq", classes, augment=dict(
      enabled=True, scale=(1.0, 1.2), flip=0.0, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
  common.real_data_model(c)

  c.tasks = {
      "segmentation": dict(kind="segmentation", num_classes=len(CLASS_NAMES[classes])),
      **{name: dict(kind="attributes", num_attributes=1) for name in ATTRIBUTE_NAMES},
  }
  c.seen_tasks = SEEN_TASKS
  c.unseen_tasks = UNSEEN_ATTRIBUTES
  if "tiny" in parsed.modifiers:
    c.data.overrides = dict(resolution=16)
  common.finish(c, parsed, tiny_examples=1)  # the fixture download's train split holds 2 images
  return c
