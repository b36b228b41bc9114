r"""Template: meta-sparsity on a dataset of your own, named in the config alone (docs/own_data.md).

Command:   python experiments/meta_train.py --config=experiments/configs/own_data.py[:VARIANT[,tiny][,KEY=VALUE...]] \
             --config.data.config=DATA_DIR/NAME/VERSION --workdir=DIR
           then  python experiments/evaluate.py --workdir=DIR ; python experiments/adapt_unseen.py --workdir=DIR ;
                 python experiments/export.py --workdir=DIR --out=DIR/export
           `config.data.config` is a dataset that any tfds builder prepared with file_format="array_record" (its
           directory, read without the builder's code), or `name[:version]` of a builder registered in `data_dir`.
Hardware:  as the network: the default is the real-data net at 256² (one GPU); `tiny` runs on CPU.
Runtime:   `tiny` on the 16² example dataset of tests/test_own_data.py: a few seconds per script after compiling.
Expected:  the example's tasks are the template's; a dataset of yours needs its own (copy this file).
Variants:  those of experiments/configs/common.py (budget, meta_sparsity, dense_mtl, magnitude, thin_dense, ...).
Tasks:     edit `TASKS` for your dataset: each task's `kind` (segmentation, depth, normals, edges, attributes,
           regression), the example feature holding its target (`feature`, default the kind's name) and the kind's
           options (docs/configuration.md#tasks); SEEN_TASKS are meta-trained, UNSEEN_TASKS adapted afterwards.
"""
import ml_collections

from experiments.configs import common
from msp.train.config import defaults

TASKS = {
    "shape": dict(kind="segmentation", num_classes=3, feature="mask"),
    "distance": dict(kind="depth", feature="distance"),
    "dark": dict(kind="attributes", num_attributes=1),  # attribute "dark" of the dataset's attribute_names
}
SEEN_TASKS = ("shape", "distance")
UNSEEN_TASKS = ("dark",)


def get_config(arg: str = "budget") -> ml_collections.ConfigDict:
  """arg: VARIANT[,tiny][,KEY=VALUE...], e.g. `budget`, `dense_mtl,tiny`."""
  parsed = common.parse_arg(arg, "own_data.py", SEEN_TASKS)
  c = common.experiment_defaults(arg)
  c.data = defaults("data").data
  c.data.name = "tfds"
  c.data.config = ml_collections.FieldReference(None, field_type=str)  # your prepared dataset: set it
  c.data.eval_split = "test"
  c.data.augment = dict(enabled=False)
  common.real_data_model(c)
  c.tasks = TASKS
  c.seen_tasks = SEEN_TASKS
  c.unseen_tasks = UNSEEN_TASKS
  common.finish(c, parsed, tiny_examples=2)
  return c
