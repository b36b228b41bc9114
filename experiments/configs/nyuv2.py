r"""Meta-sparsity on NYU-v2 (indoor scenes): seen segmentation, depth, normals; unseen edges (docs/method.md §14).

Command:   python experiments/meta_train.py \
             --config=experiments/configs/nyuv2.py[:VARIANT[,LAYOUT][,paper][,tiny][,KEY=VALUE...]] \
             --workdir=DIR --config.data.manual_dir=/path/to/download
           then  python experiments/evaluate.py --workdir=DIR ; python experiments/adapt_unseen.py --workdir=DIR
           The dataset is built from the download on first use (docs/datasets.md, "NYU-v2"); `--config.data.data_dir` says
           where (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
Hardware:  one GPU (the default net, a dilated ResNet-18-like backbone at 256², fits in a few GiB); the `tiny`
           modifier runs on CPU for tests. `paper`: XLA:CPU plans ~19 GiB for the default meta-step (first_order,
           K = 1, 4 episodes × (8 + 8) images), ~5.5 GiB with 1 episode; second_order K = 3 needs remat
           (`python benchmarks/meta_step_memory.py` prints the table for a config).
Runtime:   not measured yet on real data (no GPU run has been made with this config).
Expected:  not measured yet; docs/datasets.md will carry the table once a run exists.
Variants:  meta_sparsity, meta_sparsity_global, reference, budget (the default), maml, dense_mtl, fixed_lambda,
           single_task, thin_dense, magnitude (experiments/configs/common.py). Keys: `budget,flops=F`,
           `fixed_lambda,lambda=V`, `single_task,task=segmentation|depth|normals`, `thin_dense,flops=F`,
           `magnitude,flops=F,scope=uniform|global` (e.g. `nyuv2.py:thin_dense,flops=0.5,tiny`; thin_dense's widths
           are solved for the final network, so `paper` takes ~10 s more). Layout modifiers choose the builder config
           and its class count: `nyud_mt` (default, 40 classes), `mtan` (13), `official40`, `official13`. `paper`: the
           paper's network (the authors' dilated ResNet-D-50, ASPP heads; `paper_torchvision`: LibMTL's
           torchvision-style backbone; configs/common.py `paper_model`; sizes from `python experiments/reports/network_summary.py`).
           `tiny`: a few steps of a tiny net on 16² crops (the tests run it on fixture downloads).
Data:      training examples are augmented (random zoom 1–1.5 with depth ÷ zoom, flip with normals' x negated,
           colour jitter) to image_size²; evaluation fits them (short side to image_size, centre crop).
"""
import ml_collections

from data_pipelines.nyuv2 import LAYOUTS
from experiments.configs import common

SEEN_TASKS = ("segmentation", "depth", "normals")


def get_config(arg: str = "budget") -> ml_collections.ConfigDict:
  """arg: VARIANT[,LAYOUT][,paper|paper_torchvision][,tiny][,KEY=VALUE...], e.g. `budget`,
  `meta_sparsity,mtan,paper`, `budget,flops=0.25`."""
  parsed = common.parse_arg(arg, "nyuv2.py", SEEN_TASKS, modifiers=("tiny", *common.PAPER_MODIFIERS, *LAYOUTS))
  layout = common.chosen(f"nyuv2.py:{arg}", parsed.modifiers, LAYOUTS, "nyud_mt", "layouts")
  c = common.experiment_defaults(arg)
  c.data = common.downloaded_data("nyuv2", layout, augment=dict(
      enabled=True, scale=(1.0, 1.5), flip=0.5, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
  common.real_data_model(c)

  c.tasks = {
      "segmentation": dict(kind="segmentation", num_classes=len(LAYOUTS[layout][1])),
      "depth": dict(kind="depth"),
      "normals": dict(kind="normals"),
      "edges": dict(kind="edges", max_dist=0.011),  # NYUD-v2's published boundary tolerance (BSDS/PASCAL: 0.0075)
  }
  c.seen_tasks = SEEN_TASKS
  c.unseen_tasks = ("edges",)
  common.finish(c, parsed, tiny_examples=1)  # the fixture downloads hold 2–3 training images
  return c
