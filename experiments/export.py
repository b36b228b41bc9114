r"""Exports the physically pruned network of a meta-trained run and reports what pruning bought.

python experiments/export.py --checkpoint=runs/quickstart/checkpoints/600 --out=runs/quickstart/export
python experiments/export.py --workdir=runs/quickstart [--step=N] --out=DIR [--overwrite] [--multiple_of=8] [--adapted]

Removes the backbone's dead channels (msp/export/prune.py) and checks on random images that every task's output
equals the masked dense network's (max abs difference ≤ --tolerance, else exit status 2); writes
DIR/{inference.jax_exported, checkpoint/, spec.json} (msp/export/artifact.py; `msp.export.load(DIR)` runs it) and
checks the written function the same way; measures both networks' latency on this machine and writes and prints
DIR/report.{json,md}. Everything is written to a sibling directory first and renamed to DIR at the end, so a failed
export leaves DIR as it was; a non-empty DIR is replaced only with --overwrite. DIR may be a bucket URI (gs://...;
there the final rename copies each object).
"""
import os

from absl import flags

from experiments.run import script
from experiments.run.deployment import ExportOptions, export_run
from msp.train import ConfigError
from msp.train.files import as_path

_CONFIG = script.define_optional_config()
flags.adopt_module_key_flags(script)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a meta_train.py run (or give --checkpoint).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of --workdir to export (default: the latest).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint directory WORKDIR/checkpoints/STEP.")
_OUT = flags.DEFINE_string("out", None, "Directory or bucket URI for the export and its report (new or empty, or "
                           "see --overwrite).")
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
  path = as_path(_CHECKPOINT.value)
  if path.parent.name != "checkpoints" or not path.name.isdigit() or _STEP.value is not None:
    raise ConfigError(f"--checkpoint={_CHECKPOINT.value!r} must be a run's WORKDIR/checkpoints/STEP directory "
                      "(and replaces --step)")
  return os.fspath(path.parent.parent), int(path.name)


def main(argv):
  script.start(argv)
  with script.clear_errors():
    workdir, step = run_and_step()
    options = ExportOptions(multiple_of=_MULTIPLE_OF.value, adapted=_ADAPTED.value, tolerance=_TOLERANCE.value,
                            check_batch=_CHECK_BATCH.value, batch_sizes=tuple(int(b) for b in _BATCH_SIZES.value),
                            repeats=_REPEATS.value, warmup=_WARMUP.value, platforms=tuple(_PLATFORMS.value))
    out, step, table = export_run(workdir, step, _OUT.value, script.run_config(_CONFIG, workdir), options,
                                  overwrite=_OVERWRITE.value)
  print(f"exported {workdir} step {step} ({'adapted' if options.adapted else 'meta-trained'}) to {out}\n\n{table}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])
  script.run(main, workdir_of=lambda: run_and_step()[0])
