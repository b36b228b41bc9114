"""The quickstart's job, shared by `quickstart.py` (one seed) and `quickstart_seeds.py` (several): meta-train the
synthetic-scenes config, then score the untrained and the trained network by the same evaluation protocol."""
from experiments.run.unseen import adapt_unseen
from experiments.run.scoring import evaluate_seen
from msp.train.evaluation import describe_protocol, results_table, sparsity_summary
from experiments.run.training import open_run, train

QUICKSTART_UNSEEN = ("edges",)
COLUMNS = ("untrained", "meta-trained")


def quickstart(config, workdir: str, progress: bool = True) -> dict:
  """Meta-trains `config` in `workdir` (resuming), then scores the untrained and the trained network alike.

  Returns {"seen": {column: Results}, "unseen": {column: Results}, "summary": sparsity_summary of the trained
  state, "table": the printed text, "seen_tasks", "unseen_tasks": the Task objects of each table}; columns are
  COLUMNS."""
  train(config, workdir, progress)
  run = open_run(config, workdir)
  try:
    _, trained = run.trained_state()
    states = dict(zip(COLUMNS, (run.fresh_state(), trained)))
    seen = {name: evaluate_seen(run, s, progress=progress) for name, s in states.items()}
    adapted = {name: adapt_unseen(run, s, QUICKSTART_UNSEEN, with_seen=False, progress=progress)
               for name, s in states.items()}
  finally:
    run.close()
  unseen = {name: out["unseen"] for name, out in adapted.items()}
  summary = sparsity_summary(run.learner, trained)
  unseen_tasks = adapted["meta-trained"]["tasks"]
  target = f" (target {config.budget.target:.0%} {config.budget.target_kind})" if config.budget.enabled else ""
  table = "\n\n".join([
      f"meta-sparsity on synthetic scenes ({config.image_size}², variant {config.variant}, seed {config.seed}): "
      f"{config.steps} outer steps, mode {config.meta.mode}, K = {config.meta.inner_steps}",
      f"seen tasks ({describe_protocol(config)}):\n" + results_table(seen, run.learner.tasks),
      f"unseen tasks, new heads trained for {config.adapt.steps} steps ({config.adapt.train}) on the recalibrated "
      f"backbone:\n" + results_table(unseen, unseen_tasks),
      summary["table"],
      f"group sparsity {summary['group_sparsity_total']:.1%}{target}, parameter sparsity "
      f"{summary['param_sparsity']:.1%}, backbone FLOPs kept {summary['flops_kept']:.1%}"])
  return {"seen": seen, "unseen": unseen, "summary": {k: v for k, v in summary.items() if k != "table"},
          "table": table, "seen_tasks": run.learner.tasks, "unseen_tasks": unseen_tasks}
