r"""What λ does on synthetic scenes: every baseline and meta-sparsity variant, trained, evaluated and compared.

python experiments/reports/synthetic_variants.py [--workdir=runs/variants] [--out=runs/reports/synthetic_variants]
    [--variants=a,b] [--steps=N]

Each variant of experiments/configs/synthetic.py is meta-trained in ROOT/<variant> (resuming when it has a
checkpoint) and scored on the test split by the evaluation protocol (`msp.train.evaluation`). Writes OUT/report.md
(the commit and command that made it; final λ per layer, group and parameter sparsity, FLOPs kept, each seen task's
headline metric), OUT/lambda_trajectories.png (λ and alive channels per layer over the outer steps) and
OUT/results.json. Runtime on 2 CPU cores: about 40 min for the seven variants (docs/results/synthetic_variants.md).
"""
import json
import os

import numpy as np
from absl import flags

from experiments.run import script
from experiments.reports import plots
from experiments.run import provenance
from experiments.configs import synthetic
from experiments.run.scoring import evaluate_seen
from msp.train.evaluation import conventions, describe_protocol, sparsity_summary
from experiments.run.training import open_run, train
from msp.train.writer import per_entry, read_jsonl

_WORKDIR = flags.DEFINE_string("workdir", "runs/variants", "Folder of the variants' workdirs.")
_OUT = flags.DEFINE_string("out", os.path.join(provenance.REPORTS_ROOT, "synthetic_variants"),
                           "Folder for the report, plot and JSON.")
_VARIANTS = flags.DEFINE_list("variants", list(synthetic.PAPER_VARIANTS),
                              "Variants to run, from synthetic.VARIANTS (default: the method and the paper's "
                              "baselines; single_task has other columns, magnitude needs experiments/prune.py).")
_STEPS = flags.DEFINE_integer("steps", None, "Outer steps per run (default: the config's).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False,
                                 "Only redraw OUT/lambda_trajectories.png from OUT/results.json.")


def run_variant(variant: str, workdir: str, steps: int | None) -> dict:
  """Trains (or resumes) and evaluates one variant → its row of the report."""
  config = synthetic.get_config(variant)
  if steps is not None:
    config.steps = steps
  train(config, workdir)
  run = open_run(config, workdir)
  try:
    _, state = run.trained_state()
    results = evaluate_seen(run, state)
    headline = {t.name: (t.metric.headline, results[t.name][t.metric.headline],
                         t.metric.higher_is_better[t.metric.headline]) for t in run.learner.tasks}
    summary = sparsity_summary(run.learner, state)
  finally:
    run.close()
  records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  names = run.learner.spec.names
  trajectory = {"step": [r["step"] for r in records],
                "lambda": per_entry(records, "lambda", names), "alive": per_entry(records, "alive_channels", names),
                "group_sparsity": [r["group_sparsity_total"] for r in records]}
  return {"variant": variant, "layers": list(names), "num_groups": [layer.num_groups for layer in run.learner.spec.layers],
          "headline": headline, "results": results, "protocol": describe_protocol(config),
          "conventions": conventions(run.learner.tasks),
          "summary": {k: v for k, v in summary.items() if k != "table"}, "trajectory": trajectory}


def report(rows: list[dict]) -> str:
  """Markdown table, one row per variant."""
  tasks = list(rows[0]["headline"])
  head = [f"{t} {m} {'↑' if better else '↓'}" for t, (m, _, better) in rows[0]["headline"].items()]
  lines = ["| variant | final λ per layer (min … max) | group sparsity | param sparsity | FLOPs kept | " +
           " | ".join(head) + " |", "|---" * (5 + len(tasks)) + "|"]
  for row in rows:
    s, lam = row["summary"], np.asarray(row["summary"]["lambda"])
    lam_text = "0 (off)" if row["variant"] in ("maml", "dense_mtl") else f"{lam.min():.2g} … {lam.max():.2g}"
    metrics = " | ".join(f"{row['headline'][t][1]:.4g}" for t in tasks)
    lines.append(f"| {row['variant']} | {lam_text} | {s['group_sparsity_total']:.1%} | {s['param_sparsity']:.1%} | "
                 f"{s['flops_kept']:.1%} | {metrics} |")
  return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
  """λ and alive channels per layer over the outer steps, one panel per variant (dense ones say λ = 0)."""
  dense = ("maml", "dense_mtl")
  panels = [{"title": f"{r['variant']} ({r['summary']['group_sparsity_total']:.0%} sparse)",
             "steps": r["trajectory"]["step"], "layers": r["layers"],
             "lambda": None if r["variant"] in dense else r["trajectory"]["lambda"],
             "alive": r["trajectory"]["alive"], "num_groups": r["num_groups"]} for r in rows]
  plots.lambda_and_alive(panels, path, "synthetic scenes: λ and alive channels per layer, per variant")


def main(argv):
  script.start(argv)
  if _REPORT_ONLY.value:
    with open(os.path.join(_OUT.value, "results.json"), encoding="utf-8") as f:
      plot(json.load(f)["variants"], os.path.join(_OUT.value, "lambda_trajectories.png"))
    return
  started = provenance.provenance()
  with script.clear_errors():
    rows = [run_variant(v, os.path.join(_WORKDIR.value, v), _STEPS.value) for v in _VARIANTS.value]
  table = (f"synthetic scenes, test split; {rows[0]['protocol']}\n\n" + report(rows) + "\n\n" +
           rows[0]["conventions"])
  provenance.write_report(_OUT.value, table, {"variants": rows}, started)
  plot(rows, os.path.join(_OUT.value, "lambda_trajectories.png"))
  print(table)


if __name__ == "__main__":
  script.run(main)
