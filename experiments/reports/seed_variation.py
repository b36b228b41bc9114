r"""Does the quickstart mean something? Its configuration over several seeds, untrained against meta-trained.

python experiments/reports/seed_variation.py [--seeds=0,1,2] [--workdir=runs/quickstart_seeds] \
    [--out=runs/reports/quickstart_seeds] [--config=experiments/configs/synthetic.py:budget]

Runs `experiments/quickstart.py`'s job for each seed in ROOT/seed<N> (resuming what exists) and prints, per task and
metric, the untrained and the meta-trained network's scores (mean ± std over seeds, std with ddof = 1) and in how
many seeds the meta-trained one is better. A task counts as beating the untrained network in a seed when every one
of its metrics is better. OUT gets report.md (with the commit and command that made it, and each seed's quickstart
table) and results.json. Runtime on 2 CPU cores: about 7 min per seed.
"""
import os

import numpy as np
from absl import flags

from experiments.run import script
from experiments.run import provenance
from experiments.run.end_to_end import COLUMNS, quickstart
from msp.train.evaluation import conventions, describe_protocol, shown_metrics

_CONFIG = script.define_config("experiments/configs/synthetic.py:budget",
                               "Run configuration: file[:variant]; its seed is replaced.", lock_config=False)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart_seeds", "Folder of the per-seed workdirs.")
_OUT = flags.DEFINE_string("out", os.path.join(provenance.REPORTS_ROOT, "quickstart_seeds"), "Report folder.")


def better(value: float, reference: float, higher_is_better: bool) -> bool:
  """Strictly better in the metric's direction."""
  return value > reference if higher_is_better else value < reference


def seeds_table(per_seed: list[dict], part: str, tasks) -> tuple[str, dict[str, int]]:
  """Markdown table of `part` ("seen" / "unseen") over seeds, and {task: seeds in which it beats untrained}."""
  n = len(per_seed)
  lines = [f"| task | metric | {COLUMNS[0]} (mean ± std) | {COLUMNS[1]} (mean ± std) | better in |",
           "|---|---|---|---|---|"]
  beats = {task.name: np.ones(n, bool) for task in tasks}  # per seed: every metric of the task so far better
  for task, metric, up in shown_metrics(tasks):
    values = {c: [r[part][c][task][metric] for r in per_seed] for c in COLUMNS}
    wins = np.array([better(t, u, up) for u, t in zip(values[COLUMNS[0]], values[COLUMNS[1]])])
    beats[task] &= wins
    lines.append(f"| {task} | {metric} {'↑' if up else '↓'} | {provenance.mean_std(values[COLUMNS[0]])} | "
                 f"{provenance.mean_std(values[COLUMNS[1]])} | {wins.sum()}/{n} |")
  return "\n".join(lines), {task: int(b.sum()) for task, b in beats.items()}


def main(argv):
  script.start(argv)
  started = provenance.provenance()
  seeds = [int(s) for s in _SEEDS.value]
  per_seed = []
  with script.clear_errors():
    for seed in seeds:
      config = _CONFIG.value.copy_and_resolve_references()
      config.seed = seed
      out = quickstart(config, os.path.join(_WORKDIR.value, f"seed{seed}"))
      per_seed.append(out)
  seen_table, seen_wins = seeds_table(per_seed, "seen", per_seed[0]["seen_tasks"])
  unseen_table, unseen_wins = seeds_table(per_seed, "unseen", per_seed[0]["unseen_tasks"])
  wins = {**seen_wins, **unseen_wins}
  every = all(w == len(seeds) for w in wins.values())
  config = _CONFIG.value
  summary = "\n".join(f"- {task}: every metric better than untrained in {w}/{len(seeds)} seeds"
                      for task, w in wins.items())
  text = "\n\n".join([
      f"quickstart configuration ({config.variant}, {config.steps} outer steps) over seeds {seeds}; "
      f"{describe_protocol(config)}",
      "seen tasks:\n" + seen_table,
      f"unseen tasks (new heads, {config.adapt.steps} steps, {config.adapt.train}):\n" + unseen_table,
      conventions([*per_seed[0]["seen_tasks"], *per_seed[0]["unseen_tasks"]]),
      summary + f"\n\nevery task beats the untrained network in every seed: {'yes' if every else 'NO'}"])
  details = "\n\n".join(f"### seed {seed}\n\n```\n{r['table']}\n```" for seed, r in zip(seeds, per_seed))
  provenance.write_report(_OUT.value, text + "\n\n## Each seed's quickstart table\n\n" + details,
                         {"seeds": seeds, "wins": wins, "every_task_beats_untrained": every,
                          "per_seed": [{k: r[k] for k in ("seen", "unseen", "summary")} for r in per_seed]},
                         started)
  print("\n" + text + f"\n\nwritten to {_OUT.value}")


if __name__ == "__main__":
  script.run(main)
