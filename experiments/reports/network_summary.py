"""Parameter, kernel, output-channel, group and FLOP counts of a config's network, per stage and in total.

python experiments/reports/network_summary.py --config=experiments/configs/nyuv2.py:budget,paper

Rows: the stem (stage0), each backbone stage, the backbone, each seen task's head, the heads, the network.
params: trainable parameters (kernels, biases, BatchNorm scale and bias; not running statistics); kernels: conv
(and, in heads, dense) kernels; channels: their output channels; groups: the sparsity groups of `config.sparsity`
(backbone only); GFLOPs: multiply-adds ×2 of the convs and dense layers for one image of `config.image_size`²
(`msp.sparsity.CostModel`).
"""
import collections

import ml_collections
from absl import flags
from ml_collections import config_flags

from msp import cli
from msp.models.factory import build_model
from msp.sparsity import CostModel, flops_budget, group_spec
from msp.tasks import build_tasks

COLUMNS = ("params", "kernels", "channels", "groups", "gflops")


def _part(name: str) -> str:
  """Row of a layer name: "backbone/stage2_block0/conv1" → "stage2", "backbone/stage0_conv1" → "stem",
  "head_depth/out" → "head_depth"."""
  if not name.startswith("backbone/"):
    return name.split("/")[0]
  stage = name.split("/")[1].split("_")[0]
  return "stem" if stage == "stage0" else stage


def summary_rows(config: ml_collections.ConfigDict, params=None) -> dict[str, dict[str, float]]:
  """{row: {column in COLUMNS: value}} for the network of `config` (its model, seen tasks, sparsity groups and
  image size); with `params`, parameters and FLOPs count only the channels alive in them."""
  model = build_model(config.model, build_tasks(config.tasks, config.seen_tasks))
  size = config.image_size
  spec = group_spec(config, model)
  costs = CostModel.from_model(model, spec, size)
  rows = collections.defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
  for name, count in costs.counts(params).items():
    rows[_part(name)]["params"] += count.params
    rows[_part(name)]["gflops"] += count.flops / 1e9
  for layer in costs.layers:
    rows[_part(layer.name)]["kernels"] += 1
    rows[_part(layer.name)]["channels"] += layer.out_channels
  for layer in spec.layers:
    rows[_part(layer.name)]["groups"] += layer.num_groups
  backbone = [part for part in rows if not part.startswith("head_")]
  heads = [part for part in rows if part.startswith("head_")]
  total = lambda parts: {column: sum(rows[p][column] for p in parts) for column in COLUMNS}
  rows = {**{p: rows[p] for p in backbone}, "backbone": total(backbone), **{p: rows[p] for p in heads},
          "heads": total(heads)}
  rows["network"] = total(["backbone", "heads"])
  return rows


def summary_table(config: ml_collections.ConfigDict, params=None) -> str:
  """`summary_rows` as a markdown table, headed by the backbone's description and the input size."""
  b = config.model.backbone
  lines = [f"{b.block} ResNet, stem {b.stem} ({b.stem_width}), depths {tuple(b.depths)}, widths {tuple(b.widths)}, "
           f"dilations {tuple(b.dilations)}; input {config.image_size}²; groups: {config.sparsity.grouping}"
           f"{', residual streams tied' if flops_budget(config) else ''}", "",
           "| part | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
  for part, row in summary_rows(config, params).items():
    cells = [f"{row[c]:,.0f}" if c != "gflops" else f"{row[c]:.3f}" for c in COLUMNS]
    lines.append(f"| {part} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _main(argv):
  cli.start(argv)
  try:
    table = summary_table(flags.FLAGS["config"].value)
  except OSError as e:  # the config file could not be loaded (config_flags reports it on first use)
    cli.fail(e)
  print(table)


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Experiment config, e.g. experiments/configs/nyuv2.py:budget,paper.")
  flags.mark_flag_as_required("config")
  cli.run(_main)
