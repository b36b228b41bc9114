"""What λ does: faithful meta-sparsity variants and budget mode on teacher–student data, fresh vs fixed data.

python experiments/reports/lambda_trajectories.py [--out=runs/reports/lambda_report] [--steps=2000] [--variants=a,b]
    [--regimes=fresh,fixed]
python experiments/reports/lambda_trajectories.py [--out=...] --report_only   # table + plot from saved runs

Each run saves <out>/<regime>_<variant>.json (λ and alive channels per layer over the steps, final sparsity per
layer, FLOPs kept, test MSE by the evaluation protocol, the commit and command); --report_only (also done after the
runs) writes <out>/report.md, results.json and lambda_trajectories_<regime>.png. A run that the safeguards stop
(its meta-gradient diverged: most steps skipped) is an outcome of its variant, reported in the table as such.
Runtime on 2 CPU cores: about 3–4 min per first-order run and 9 min per second-order run of 2000 steps.
"""
import itertools
import json
import os

import numpy as np
from absl import flags

from experiments.run import script
from experiments.reports import plots
from experiments.run import provenance
from experiments.configs import teacher_student
from experiments.run.student import adapted_test_mse, train
from msp.train.safeguards import DivergedError

VARIANTS = {
    "dense (λ = 0)": dict(sparsity=dict(enabled=False), meta=dict(mode="first_order")),
    "second_order": dict(meta=dict(mode="second_order")),
    "first_order": dict(meta=dict(mode="first_order")),
    "reference": dict(meta=dict(mode="reference"), sparsity=dict(lambda_mode="global")),
    "budget 50 %": dict(meta=dict(mode="first_order"), budget=dict(enabled=True, target=0.5)),
    f"budget {teacher_student.TEACHER_SPARSITY:.1%} (teacher's)": dict(
        meta=dict(mode="first_order"), budget=dict(enabled=True, target=teacher_student.TEACHER_SPARSITY)),
    "budget 90 %": dict(meta=dict(mode="first_order"), budget=dict(enabled=True, target=0.9)),
}
REGIMES = {"fresh": None, "fixed": 128}  # pool size: None draws fresh examples every step

_OUT = flags.DEFINE_string("out", os.path.join(provenance.REPORTS_ROOT, "lambda_report"), "Output folder.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Outer steps per run.")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), "Variants to run.")
_REGIMES = flags.DEFINE_list("regimes", list(REGIMES), "Data regimes to run.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only write the table and plot from saved runs.")


def slug(regime: str, variant: str) -> str:
  """An ASCII file name for a run: `fresh_budget_50`, `fixed_dense_lambda_0`."""
  ascii_name = variant.replace("λ", "lambda").encode("ascii", "ignore").decode()
  words = "".join(ch if ch.isalnum() else " " for ch in ascii_name).split()
  return "_".join([regime, *words])


def run(variant: str, regime: str, steps: int) -> dict:
  config = teacher_student.get_config()
  for section, values in VARIANTS[variant].items():
    config[section].update(values)
  config.steps = steps
  config.teacher.pool_size = REGIMES[regime]
  try:
    learner, data, state, history = train(config, progress=False, log_every=10)
  except DivergedError as e:  # an outcome of the variant, reported as such
    return {"variant": variant, "regime": regime, "stopped": str(e).split(" (", 1)[0]}
  last = history[-1]
  return {
      "variant": variant, "regime": regime, "steps": [h["step"] for h in history],
      "layers": list(learner.spec.names), "teacher_alive": list(config.teacher.alive_per_layer),
      "lambda": [h["lambda"].tolist() for h in history],
      "group_sparsity_total": [float(h["group_sparsity_total"]) for h in history],
      "alive": [np.asarray(h["alive_channels"]).tolist() for h in history],
      "num_groups": [layer.num_groups for layer in learner.spec.layers],
      "alive_channels": last["alive_channels"].tolist(),
      "final_group_sparsity": float(last["group_sparsity_total"]),
      "param_sparsity": float(last["param_sparsity"]), "flops_kept": float(last["flops_kept"]),
      "test_mse": float(np.mean(list(adapted_test_mse(learner, state, data, config.seed).values()))),
  }


def summarize(out: str, started: dict | None = None) -> None:
  """OUT/report.md (one row per saved run) and OUT/lambda_trajectories_<regime>.png (λ and alive channels per layer
  over the steps, one panel per variant) from the runs saved in OUT."""
  runs = {}
  for regime, variant in itertools.product(REGIMES, VARIANTS):
    path = os.path.join(out, slug(regime, variant) + ".json")
    if os.path.exists(path):
      with open(path) as f:
        runs[regime, variant] = json.load(f)
  lines = ["| data | variant | final λ per layer | alive channels per layer | group sparsity | param sparsity "
           "| FLOPs kept | test MSE |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for (regime, variant), r in runs.items():
    if "stopped" in r:
      lines.append(f"| {regime} | {variant} | – | – | – | – | – | diverged, stopped at {r['stopped']} |")
      continue
    lam = ", ".join(f"{v:.2g}" for v in r["lambda"][-1]) if variant != "dense (λ = 0)" else "0"
    lines.append(f"| {regime} | {variant} | {lam} | {', '.join(map(str, r['alive_channels']))} "
                 f"| {r['final_group_sparsity']:.1%} | {r['param_sparsity']:.1%} | {r['flops_kept']:.1%} "
                 f"| {r['test_mse']:.3f} |")
  provenance.write_report(out, "\n".join(lines), {"runs": list(runs.values())}, started)
  print("\n".join(lines))
  for regime in REGIMES:
    panels = [{"title": f"{variant} ({r['final_group_sparsity']:.0%} sparse)", "steps": r["steps"],
               "layers": r["layers"], "lambda": None if variant == "dense (λ = 0)" else r["lambda"],
               "alive": r["alive"], "num_groups": r["num_groups"]}
              for (reg, variant), r in runs.items() if reg == regime and "stopped" not in r]
    if panels:
      plots.lambda_and_alive(panels, os.path.join(out, f"lambda_trajectories_{regime}.png"),
                             f"teacher–student, {regime} data: λ and alive channels per layer")


def main(argv):
  script.start(argv)
  started = provenance.provenance()
  for flag, given, known in (("variants", _VARIANTS.value, VARIANTS), ("regimes", _REGIMES.value, REGIMES)):
    if unknown := [name for name in given if name not in known]:
      script.fail(f"--{flag}: {unknown[0]!r} is not one of {list(known)}")
  os.makedirs(_OUT.value, exist_ok=True)
  if not _REPORT_ONLY.value:
    for regime, variant in itertools.product(_REGIMES.value, _VARIANTS.value):
      result = {**run(variant, regime, _STEPS.value), "provenance": provenance.provenance()}
      with open(os.path.join(_OUT.value, slug(regime, variant) + ".json"), "w") as f:
        json.dump(result, f)
      print(f"{regime:6s} {variant:14s} " + (f"diverged, stopped at {result['stopped']}" if "stopped" in result else
            f"sparsity {result['final_group_sparsity']:.1%} FLOPs kept {result['flops_kept']:.1%} test MSE "
            f"{result['test_mse']:.3f}"), flush=True)
  summarize(_OUT.value, started)


if __name__ == "__main__":
  script.run(main)
