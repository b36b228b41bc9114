r"""Does learned sparsity pay? Every method and baseline × cost target × seed on one dataset (experiments/sweep.py).

Command:   python experiments/sweep.py --config=experiments/configs/sweep.py[:DATASET[,tiny]] --workdir=runs/sweep \
               [--shard=i/n] [--dry_run]
           then  python experiments/reports/tables.py --runs='runs/sweep/*/seed*' \
               --baseline='runs/sweep/single_task*/seed*' --out=runs/sweep/tables
DATASET:   synthetic (the default), nyuv2 or celebamask_hq (give --config.data_dir, and --config.manual_dir for the
           first build); `tiny`: the single-task references and one run of each kind of baseline at one target, `tiny`
           variants, 2 seeds (the tests' sweep: minutes).
Hardware:  2 CPU cores for synthetic scenes; real data wants an accelerator.
Runtime:   synthetic on 2 CPU cores: 63 runs, each trained 600 outer steps (or pruned from dense_mtl), fine-tuned 300,
           evaluated twice, adapted once and exported: 2 h 01 min for 57 of them with adaptation left out (two
           slices in parallel) plus 22 min for the 6 magnitude runs at 20 % and 30 %; the
           adaptation of the 48 fine-tuned multi-task runs (about a minute each) adds about 30 min on two slices.
           --shard splits it over processes or machines, and a rerun skips what is finished.
Expected:  after fine-tuning, budget,flops=0.25 at about 26 % of the FLOPs level with global magnitude pruning at 25 %
           (−2.2 % against −1.8 % of Δm, seed std about 0.8); budget,flops=0.5 about 1.3 points behind it at 50 %
           (−1.7 % against −0.4 %); docs/results/comparison.md has the table.

Every run is `experiments/configs/<DATASET>.py:<method>[,tiny]` with `--config.seed=<seed>` (magnitude runs prune the
same seed's dense_mtl run) and goes through the same stages: train → evaluate → adapt (unseen tasks) → finetune
(the comparison protocol) → evaluate and adapt the fine-tuned run → export it (latency).
"""
import importlib

import ml_collections

# Cost targets (fractions of the backbone's FLOPs kept) at which the pruning methods are compared.
FLOPS_TARGETS = (0.25, 0.5)
FIXED_LAMBDAS = (0.01, 0.02, 0.05)
# Magnitude pruning at two more targets, to draw its front between and below FLOPS_TARGETS (before the budget's
# outer prox was capped for FLOPs targets, budget mode landed there: 20 % at flops=0.25, 29 % at flops=0.5).
MAGNITUDE_EXTRA = (0.2, 0.3)
DATASETS = ("synthetic", "nyuv2", "celebamask_hq")


def methods(seen_tasks) -> tuple[str, ...]:
  """The variant args of a full comparison, in the order a sweep runs them (the comparisons at equal FLOPs first, so
  that an interrupted sweep has them): the single-task references, the dense network, every pruning method at
  every target, then the λ-learning and fixed-λ networks and MAML's dense one."""
  return (*(f"single_task,task={t}" for t in seen_tasks), "dense_mtl",
          *(f"magnitude,flops={f},scope={s}" for f in FLOPS_TARGETS for s in ("uniform", "global")),
          *(f"magnitude,flops={f},scope=global" for f in MAGNITUDE_EXTRA),
          *(f"budget,flops={f}" for f in FLOPS_TARGETS), *(f"thin_dense,flops={f}" for f in FLOPS_TARGETS),
          "meta_sparsity", *(f"fixed_lambda,lambda={v}" for v in FIXED_LAMBDAS), "maml")


def get_config(arg: str = "synthetic") -> ml_collections.ConfigDict:
  """arg: DATASET, optionally followed by `,tiny`."""
  dataset, *modifiers = arg.split(",")
  if dataset not in DATASETS or any(m != "tiny" for m in modifiers):
    raise ValueError(f"unknown sweep {arg!r} of sweep.py; choose one of {DATASETS}, optionally followed by ,tiny")
  tiny = "tiny" in modifiers
  seen = importlib.import_module(f"experiments.configs.{dataset}").get_config(
      "dense_mtl,tiny" if tiny else "dense_mtl").seen_tasks
  c = ml_collections.ConfigDict()
  c.dataset = dataset
  c.tiny = tiny
  c.seeds = (0, 1) if tiny else (0, 1, 2)
  # Variant args of the dataset config, each optionally followed by run-config overrides `+KEY=VALUE` (sweep.py).
  c.methods = methods(seen)
  if tiny:  # every kind of method once, at one target
    c.methods = (*(f"single_task,task={t}" for t in seen), "dense_mtl", "budget,flops=0.5", "thin_dense,flops=0.5",
                 "magnitude,flops=0.5,scope=global", "fixed_lambda,lambda=0.05")
  # Set for every run when not None (None: each config's own).
  c.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.manual_dir = ml_collections.FieldReference(None, field_type=str)
  c.steps = ml_collections.FieldReference(None, field_type=int)
  c.finetune_steps = ml_collections.FieldReference(None, field_type=int)
  # Which networks are adapted to the unseen tasks (single-task references never are): "trained" (as trained),
  # "finetuned" (after the protocol's fine-tuning). A full sweep adapts the structures it compares, the fine-tuned
  # ones: adapting the trained ones too costs about a minute per run (synthetic, 2 CPU cores). The tiny sweep does both.
  c.adapt = ("trained", "finetuned") if tiny else ("finetuned",)
  c.export = True  # export every fine-tuned run and measure its latency
  # What a stage is expected to take (seconds) before this sweep has measured it: the plan's first ETA.
  c.expected_seconds = dict(train_step=0.02 if tiny else 0.15, finetune_step=0.02 if tiny else 0.12,
                            prune=10.0, evaluate=15.0 if tiny else 10.0, adapt=15.0 if tiny else 60.0,
                            export=15.0 if tiny else 20.0, startup=12.0 if tiny else 25.0)
  return c
