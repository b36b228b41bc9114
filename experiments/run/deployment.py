"""Export of a run's physically pruned network with its report (what experiments/export.py runs)."""
import dataclasses
import os

import jax
import ml_collections
import numpy as np
from etils import epath

from experiments.run import provenance
from experiments.run.scoring import adapted_to_seen_tasks
from experiments.run.training import open_run
from msp.export.artifact import serialize_inference, spec_dict, write_artifact
from msp.export.loader import CHECKPOINT_DIR, INFERENCE_FILE, SPEC_FILE, inference_function
from msp.export.prune import ExportError, check_exact, max_abs_differences, plan_pruning, prune
from msp.export.report import build_report, forward_latencies, machine, network_costs, report_markdown
from msp.parallel import is_primary, local, same_everywhere, sync
from msp.train import ConfigError
from msp.train.evaluation import write_results
from msp.train.files import WriteError, absolute, as_path, error_reason, is_remote


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  """multiple_of: kept channel counts rounded up to it; adapted: export the variables after the run's inner loop on
  the evaluation support batch; tolerance: largest max abs difference between dense and pruned outputs;
  check_batch: random images of the exactness check; batch_sizes, repeats (median reported), warmup: the latency
  measurement; platforms: lowering platforms of the exported function (empty: this machine's)."""
  multiple_of: int = 1
  adapted: bool = False
  tolerance: float = 1e-5
  check_batch: int = 4
  batch_sizes: tuple[int, ...] = (1, 8)
  repeats: int = 20
  warmup: int = 3
  platforms: tuple[str, ...] = ()


# What an export directory holds (msp/export/artifact.py, and the report): `--overwrite` replaces nothing else.
EXPORT_ENTRIES = frozenset({INFERENCE_FILE, SPEC_FILE, CHECKPOINT_DIR, "report.json", "report.md"})
OWN_EXPORT = "export"  # WORKDIR/export: the one place inside a run directory an export of that run may go


def is_run_directory(path: epath.Path) -> bool:
  """Whether `path` is (or looks like) a run's workdir: it holds `checkpoints/`, or config.json and metrics.jsonl."""
  return (path / "checkpoints").is_dir() or all((path / name).is_file() for name in ("config.json", "metrics.jsonl"))


def _resolved(path: str) -> str:
  """`path` with links and `..` resolved (a local path) or without a trailing slash (a URI)."""
  return path.rstrip("/") if is_remote(path) else os.path.realpath(path)


def _within(inner: str, outer: str) -> bool:
  """Whether the resolved path `inner` is `outer` or lies inside it."""
  return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _ancestors(path: str) -> list[str]:
  """The resolved `path` and every directory above it, up to the root or the bucket (`gs://bucket`)."""
  scheme, rest = path.split("://", 1) if is_remote(path) else ("", path)
  parts = rest.split("/")
  chain = ["/".join(parts[:i]) or "/" for i in range(len(parts), 0, -1)]
  return [f"{scheme}://{p}" for p in chain if p != "/"] if scheme else chain


def check_out(out: str, workdir: str, overwrite: bool) -> None:
  """ConfigError unless `out` may receive the export of the run in `workdir`: a new or empty directory, or with
  `overwrite` an earlier export (nothing but EXPORT_ENTRIES), that neither is nor holds a run directory and lies in
  none, except at the exported run's own WORKDIR/export. So no export ever replaces a run's files. Either may be a
  local path or a bucket URI."""
  given = out
  out, workdir = _resolved(out), _resolved(workdir)
  path = as_path(out)
  if path.exists() and not path.is_dir():
    raise ConfigError(f"--out={given!r} exists and is not a directory")
  if _within(workdir, out):
    raise ConfigError(f"--out={given!r} is or holds the run being exported ({workdir}); an export goes to a "
                      f"directory of its own, e.g. {workdir}/{OWN_EXPORT}")
  if out != f"{workdir}/{OWN_EXPORT}":
    for ancestor in _ancestors(out):
      if is_run_directory(as_path(ancestor)):
        raise ConfigError(f"--out={given!r} {'is' if ancestor == out else 'lies inside'} the run directory "
                          f"{ancestor}; an export goes to a directory of its own (or its run's WORKDIR/{OWN_EXPORT})")
  entries = {entry.name for entry in path.iterdir()} if path.is_dir() else set()
  if entries and not overwrite:
    raise ConfigError(f"--out={given!r} is not empty; give --overwrite to replace an earlier export there, or "
                      f"another directory")
  if entries and (not {SPEC_FILE, INFERENCE_FILE} <= entries or entries - EXPORT_ENTRIES):
    foreign = sorted(entries - EXPORT_ENTRIES)
    what = f"it holds {', '.join(foreign[:3])}" if foreign else f"it lacks {SPEC_FILE} or {INFERENCE_FILE}"
    raise ConfigError(f"--out={given!r} is not an earlier export ({what}), and --overwrite replaces only an "
                      f"export; choose another directory")


def export_run(workdir: str, step: int | None, out: str, config: ml_collections.ConfigDict,
               options: ExportOptions = ExportOptions(), overwrite: bool = False) -> tuple[str, int, str]:
  """Exports checkpoint `step` (None: the latest) of the run in `workdir` (with `config`) to `out`:
  OUT/{inference.jax_exported, checkpoint/, spec.json, report.json, report.md} (experiments/export.py's docstring).

  Everything is written to a sibling directory first and renamed to `out` at the end, so a failed export leaves
  `out` as it was. Returns (out as an absolute path, the step exported, the report in markdown). Raises
  ConfigError (a bad value, a non-empty `out` without `overwrite`, an inexact pruned network).

  In a multi-process job every process prunes, checks and times the network on its own first device, orbax
  writes the checkpoint collectively, and process 0 writes the other files."""
  out = absolute(out)
  writer_pid = int(same_everywhere(np.int64(os.getpid())))  # one staging directory for all processes
  staging = as_path(out).parent / f".{as_path(out).name}.partial-{writer_pid}"
  try:
    return _export(workdir, step, out, staging, config, options, overwrite)
  finally:
    sync("export written")
    if is_primary() and staging.exists():
      staging.rmtree()  # gone after a successful export; a failed one leaves no trace


def _export(workdir: str, step: int | None, out: str, staging: epath.Path, config: ml_collections.ConfigDict,
            options: ExportOptions, overwrite: bool) -> tuple[str, int, str]:
  check_out(out, workdir, overwrite)
  run = open_run(config, workdir)
  try:
    step, state = run.trained_state(step)
    state = local(state)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if options.adapted:
      variables = adapted_to_seen_tasks(run, state)
  finally:
    run.close()
  model, size = run.learner.model, run.config.image_size
  try:
    plan = plan_pruning(model, variables["params"], options.multiple_of)
    pruned_model, pruned_variables = prune(model, variables, plan)
    images = jax.random.uniform(jax.random.key(0), (options.check_batch, size, size, 3))
    dense_outputs = model.apply(variables, images, train=False)
    differences = max_abs_differences(dense_outputs, pruned_model.apply(pruned_variables, images, train=False))
    check_exact(differences, options.tolerance)
    platforms = options.platforms or (jax.default_backend(),)
    source = {"workdir": absolute(workdir), "step": step,
              "variables": "adapted" if options.adapted else "meta-trained", "multiple_of": options.multiple_of}
    spec = spec_dict(pruned_model, run.config.model.to_dict(), plan, size, platforms, source)
    serialized = serialize_inference(pruned_model, pruned_variables, size, platforms)
    try:
      write_artifact(staging, spec, pruned_variables, serialized)
    except Exception as e:  # orbax wraps a full disk in its own errors
      raise WriteError(f"cannot write the export into {staging}: {error_reason(e)}") from e
    exported = inference_function((staging / INFERENCE_FILE).read_bytes())  # as written, from a bucket too
    exported_differences = max_abs_differences(dense_outputs, exported(images))
    check_exact(exported_differences, options.tolerance)
  except ExportError as e:
    raise ConfigError(str(e)) from e

  networks = {"dense": (model, variables), "pruned": (pruned_model, pruned_variables)}
  costs = {name: network_costs(m, v, size) for name, (m, v) in networks.items()}
  latencies = forward_latencies(networks, size, list(options.batch_sizes), options.repeats, options.warmup)
  report = build_report(
      costs, latencies, machine=machine(), image_size=size, repeats=options.repeats, warmup=options.warmup,
      tolerance=options.tolerance, max_abs_difference=differences, exported_max_abs_difference=exported_differences,
      channels={conv: {"dense": plan.dense[conv], "kept": len(kept)} for conv, kept in plan.kept.items()},
      source=source)
  made_by = provenance.provenance()
  table = provenance.provenance_line(made_by) + "\n\n" + report_markdown(report)
  write_results(staging, "report", {"provenance": made_by, **report}, table)
  if is_primary():
    destination = as_path(out)
    if destination.exists():
      check_out(out, workdir, overwrite)  # again: the directory may have changed while the export ran
      destination.rmtree()
    staging.rename(destination)  # in a bucket, a copy of each object: not atomic there
  return out, step, table
