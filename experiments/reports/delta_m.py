r"""Δm of one run's results against a baseline's (`msp.tasks.delta_m`), as a markdown report.

python experiments/reports/delta_m.py --results=A.json --baseline=B.json[,C.json...] [--convention=metric_mean]
    [--metric_set=all | --metrics=segmentation:miou,depth:abs_err] [--output=delta_m.json]

Results files are what experiments/evaluate.py writes ({"results": {task: {metric: value}}, ...}), what
experiments/adapt_unseen.py writes ({"unseen": {...}, "seen": {...}}: both parts are read), or bare
{task: {metric: value}} maps; several files (one single-task run each) are merged by task.
"""
import json
from typing import Sequence

from absl import flags

from msp import cli
from msp.tasks.delta_m import CONVENTIONS, METRIC_SETS, DeltaM, delta_m, load_results, report

def command(results: str, baseline: str, convention: str = "task_mean", metric_set: str = "libmtl",
            metrics_to_compare: str | None = None, output: str | None = None) -> DeltaM:
  """What the command line does (module docstring), from its flags' values: prints the report, writes `output` if
  given and returns the DeltaM. `baseline` is comma-separated files, `metrics_to_compare` comma-separated
  task:metric pairs (the --metrics flag)."""
  baseline_paths = baseline.split(",")
  run_results, baseline_results = load_results([results]), load_results(baseline_paths)
  chosen = (None if metrics_to_compare is None
            else [tuple(item.split(":", 1)) for item in metrics_to_compare.split(",")])
  delta = delta_m(run_results, baseline_results, convention, chosen, metric_set=metric_set)
  print(report(delta, run_results, baseline_results))
  if output:
    with open(output, "w", encoding="utf-8") as f:
      json.dump({"delta_m": delta.value, "convention": delta.convention, "metric_set": delta.metric_set,
                 "results": results, "baseline": baseline_paths, "per_task": delta.per_task,
                 "per_metric": {f"{task}:{name}": v for (task, name), v in delta.per_metric.items()},
                 "left_out": {f"{task}:{name}": why for (task, name), why in delta.left_out.items()}}, f, indent=1)
  return delta


def _define_flags() -> None:
  """The command line's flags; defined only when the module runs as a script (absl flags are process-global, and
  the tests import `command`)."""
  flags.DEFINE_string("results", None, "results JSON of the run to assess", required=True)
  flags.DEFINE_string("baseline", None, "baseline results JSON file(s), comma-separated", required=True)
  flags.DEFINE_enum("convention", "task_mean", CONVENTIONS, "task_mean: LibMTL's; metric_mean: a flat mean")
  flags.DEFINE_enum("metric_set", "libmtl", METRIC_SETS,
                    "libmtl: each task's metrics as LibMTL compares them; all: every shared metric")
  flags.DEFINE_string("metrics", None, "comma-separated task:metric pairs to compare (replaces --metric_set)")
  flags.DEFINE_string("output", None, "also write Δm and its parts to this JSON file")


def main(argv: Sequence[str]) -> None:
  cli.start(argv)
  f = flags.FLAGS
  try:
    command(f.results, f.baseline, f.convention, f.metric_set, f.metrics, f.output)
  except (OSError, ValueError) as e:  # a missing or unreadable file, results that cannot be compared
    cli.fail(e)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
