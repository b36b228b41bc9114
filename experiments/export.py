r"""Exports the physically pruned network of a meta-trained run and reports what pruning bought.

python experiments/export.py --checkpoint=runs/quickstart/checkpoints/600 --out=runs/quickstart/export
python experiments/export.py --workdir=runs/quickstart [--step=N] --out=DIR [--overwrite] [--multiple_of=8] [--adapted]

Removes the backbone's dead channels (msp/export/prune.py) and checks on random images that every task's output
equals the masked dense network's (max abs difference ≤ --tolerance, else exit status 2); writes
DIR/{inference.jax_exported, checkpoint/, spec.json} (msp/export/artifact.py; `msp.export.load(DIR)` runs it) and
checks the written function the same way; measures both networks' latency on this machine and writes and prints
DIR/report.{json,md}. Everything is written to a sibling directory first and renamed to DIR at the end, so a failed
export leaves DIR as it was; a non-empty DIR is replaced only with --overwrite.
"""
import os
import pathlib
import shutil

import jax
from absl import flags

from experiments import common, reporting
from msp.export import load
from msp.export.artifact import serialize_inference, spec_dict, write_artifact
from msp.export.prune import ExportError, check_exact, max_abs_differences, plan_pruning, prune
from msp.export.report import build_report, forward_latencies, machine, network_costs, report_markdown
from msp.train import ConfigError
from experiments.evaluation import adapted_to_seen_tasks
from msp.train.evaluation import write_results
from experiments.train import open_run

_CONFIG = common.define_optional_config()
flags.adopt_module_key_flags(common)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a meta_train.py run (or give --checkpoint).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of --workdir to export (default: the latest).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint directory WORKDIR/checkpoints/STEP.")
_OUT = flags.DEFINE_string("out", None, "Directory for the export and its report (new or empty, or see --overwrite).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it holds files (of an earlier export).")
_MULTIPLE_OF = flags.DEFINE_integer("multiple_of", 1, "Round kept channel counts up to a multiple of this.")
_ADAPTED = flags.DEFINE_bool("adapted", False, "Export the variables after the run's inner loop on the evaluation "
                             "support batch (what evaluate.py scores) instead of the meta-trained initialisation.")
_TOLERANCE = flags.DEFINE_float("tolerance", 1e-5, "Largest max abs difference allowed between dense and pruned.")
_CHECK_BATCH = flags.DEFINE_integer("check_batch", 4, "Random images for the exactness check.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes whose latency is measured.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed forwards per network and batch size (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed forwards before timing.")
_PLATFORMS = flags.DEFINE_list("platforms", [], "Platforms to lower the exported function for, e.g. cpu,cuda "
                               "(default: this machine's).")


def run_and_step() -> tuple[str, int | None]:
  """(workdir, step) from --checkpoint or --workdir/--step."""
  if (_CHECKPOINT.value is None) == (_WORKDIR.value is None):
    raise ConfigError("give either --checkpoint=WORKDIR/checkpoints/STEP or --workdir (with --step)")
  if _WORKDIR.value is not None:
    return _WORKDIR.value, _STEP.value
  path = pathlib.Path(_CHECKPOINT.value)
  if path.parent.name != "checkpoints" or not path.name.isdigit() or _STEP.value is not None:
    raise ConfigError(f"--checkpoint={_CHECKPOINT.value!r} must be a run's WORKDIR/checkpoints/STEP directory "
                      "(and replaces --step)")
  return str(path.parent.parent), int(path.name)


def check_out(out: str, overwrite: bool) -> None:
  """ConfigError unless `out` is new, an empty directory, or (with `overwrite`) a directory to replace."""
  if os.path.lexists(out) and not os.path.isdir(out):
    raise ConfigError(f"--out={out!r} exists and is not a directory")
  if os.path.isdir(out) and os.listdir(out) and not overwrite:
    raise ConfigError(f"--out={out!r} is not empty; give --overwrite to replace it, or another directory")


def main(argv):
  common.start(argv)
  out = os.path.abspath(_OUT.value)
  staging = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.partial-{os.getpid()}")
  try:
    export(out, staging)
  finally:
    shutil.rmtree(staging, ignore_errors=True)  # gone after a successful export; a failed one leaves no trace


def export(out: str, staging: str) -> None:
  """Exports and reports into `staging`, then renames it to `out` (module docstring)."""
  with common.clear_errors():
    check_out(out, _OVERWRITE.value)
    workdir, step = run_and_step()
    run = open_run(common.run_config(_CONFIG, workdir), workdir)
    try:
      step, state = run.trained_state(step)
      variables = {"params": state.params, "batch_stats": state.batch_stats}
      if _ADAPTED.value:
        variables = adapted_to_seen_tasks(run, state)
    finally:
      run.close()
    model, size = run.learner.model, run.config.image_size
    try:
      plan = plan_pruning(model, variables["params"], _MULTIPLE_OF.value)
      pruned_model, pruned_variables = prune(model, variables, plan)
      images = jax.random.uniform(jax.random.key(0), (_CHECK_BATCH.value, size, size, 3))
      dense_outputs = model.apply(variables, images, train=False)
      differences = max_abs_differences(dense_outputs, pruned_model.apply(pruned_variables, images, train=False))
      check_exact(differences, _TOLERANCE.value)
      platforms = tuple(_PLATFORMS.value) or (jax.default_backend(),)
      source = {"workdir": os.path.abspath(workdir), "step": step,
                "variables": "adapted" if _ADAPTED.value else "meta-trained", "multiple_of": _MULTIPLE_OF.value}
      spec = spec_dict(pruned_model, run.config.model.to_dict(), plan, size, platforms, source)
      write_artifact(staging, spec, pruned_variables,
                     serialize_inference(pruned_model, pruned_variables, size, platforms))
      exported_differences = max_abs_differences(dense_outputs, load(staging)(images))
      check_exact(exported_differences, _TOLERANCE.value)
    except ExportError as e:
      raise ConfigError(str(e)) from e

  networks = {"dense": (model, variables), "pruned": (pruned_model, pruned_variables)}
  costs = {name: network_costs(m, v, size) for name, (m, v) in networks.items()}
  latencies = forward_latencies(networks, size, [int(b) for b in _BATCH_SIZES.value], _REPEATS.value, _WARMUP.value)
  report = build_report(
      costs, latencies, machine=machine(), image_size=size, repeats=_REPEATS.value, warmup=_WARMUP.value,
      tolerance=_TOLERANCE.value, max_abs_difference=differences, exported_max_abs_difference=exported_differences,
      channels={conv: {"dense": plan.dense[conv], "kept": len(kept)} for conv, kept in plan.kept.items()},
      source=source)
  provenance = reporting.provenance()
  table = reporting.provenance_line(provenance) + "\n\n" + report_markdown(report)
  write_results(staging, "report", {"provenance": provenance, **report}, table)
  if os.path.isdir(out) and os.listdir(out):
    shutil.rmtree(out)  # check_out allowed this only with --overwrite
  os.replace(staging, out)
  print(f"exported {workdir} step {step} ({source['variables']}) to {out}\n\n{table}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])
  common.run(main, workdir_of=lambda: run_and_step()[0])
