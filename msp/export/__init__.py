"""Export of a physically pruned network: exact, smaller, faster, runnable without msp's training code.

prune.py     which channels to keep (per channel space) and slicing them out of every coupled tensor
artifact.py  the export directory: jax.export function, orbax checkpoint, spec.json
report.py    parameters, FLOPs and measured latency, dense against pruned
loader.py    `load(dir)`: runs an export with jax alone (this package imports nothing else eagerly);
             `REQUIREMENTS`: the pinned packages that a deployment installs for it

Example (experiments/export.py does all of it from a run's checkpoint):
  plan = prune.plan_pruning(model, variables["params"], multiple_of=8)
  pruned_model, pruned_variables = prune.prune(model, variables, plan)
  ...
  forward = msp.export.load("export_dir")
  outputs = forward(images)  # {task: output}
"""
from msp.export.loader import load, load_spec

__all__ = ["load", "load_spec"]
