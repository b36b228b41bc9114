"""experiments/reports/tables.py on tiny finished runs laid out as a sweep writes them: the numbers against numpy over the
runs' own files, Δm by hand, the three formats against each other, the plots, and one-line errors."""
import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg

from experiments.reports import tables
from experiments.run.unseen import adapt_and_write
from experiments.configs import celebamask_hq, nyuv2, synthetic
from experiments.run.scoring import evaluate_and_write
from experiments.run.training import open_run, train
from msp.train import ConfigError
from tests.run_fixtures import with_overrides
from tests.test_celebamask_hq_builder import _write_release
from tests.test_nyuv2_builder import write_nyud_mt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (0, 1)
# Fewer heads than `tiny`'s three seen tasks: one single-task baseline fewer to train.
SEEN = ("segmentation", "depth")
UNSEEN = ("edges", "has_sphere")


def _finish(config, workdir, adapt=True):
  """Trains `config` in `workdir`, then `_score`s its last checkpoint."""
  train(config, workdir, progress=False)
  _score(config, workdir, None, adapt)


def _score(config, workdir, step, adapt):
  """Writes what evaluate.py and (with `adapt`) adapt_unseen.py write for checkpoint `step` (None: the last)."""
  run = open_run(config, workdir)
  try:
    evaluate_and_write(run, step, config.data.eval_split, progress=False)
    if adapt:
      adapt_and_write(run, step, progress=False)
  finally:
    run.close()


def _config(module, arg, seed, **overrides):
  config = module.get_config(arg)
  config.seed = seed
  return with_overrides(config, **{"steps": 2, **overrides})


def _export(workdir, step):
  out = subprocess.run([sys.executable, "experiments/export.py", f"--workdir={workdir}", f"--step={step}",
                        f"--out={os.path.join(workdir, 'export')}", "--batch_sizes=1", "--repeats=2", "--warmup=1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-3000:]


def build_runs(root, data_dir):
  """ROOT/sweep/budget/seed<k> (sweep.json; seed 0 with a finetuned/ run that has an export report) and
  ROOT/sweep/dense_mtl/seed<k> (no sweep.json: labelled by its config) for k in SEEDS; ROOT/single/<task>/seed<k>,
  single-task dense runs: both seeds of segmentation, seed 0 of depth."""
  def config(arg, seed, **overrides):
    c = _config(synthetic, f"{arg},tiny", seed, **{"seen_tasks": SEEN, "unseen_tasks": UNSEEN, **overrides})
    c.data.data_dir = data_dir
    return c

  pruning = {"sparsity.lambda_init": 6.0}  # prunes a third of the channels within 2 steps (budget: at most half)
  for seed in SEEDS:
    budget = os.path.join(root, "sweep", "budget", f"seed{seed}")
    _finish(config("budget", seed, **pruning), budget)
    with open(os.path.join(budget, "sweep.json"), "w") as f:
      json.dump({"label": "budget", "method": "budget", "target": {"channels_removed": 0.5}, "seed": seed,
                 "dataset": "synthetic"}, f)
    if seed == 0:  # finetuned/: trained 2 steps further, scored on validation every step; best.json names the best
      finetuned = os.path.join(budget, "finetuned")
      shutil.copytree(budget, finetuned, ignore=shutil.ignore_patterns("eval", "adapt", "sweep.json"))
      more = config("budget", seed, steps=4, eval_every=1, checkpoint_every=1, **pruning)
      train(more, finetuned, progress=False)
      with open(os.path.join(finetuned, "checkpoints_best", "best.json")) as f:
        best = json.load(f)["step"]
      for step in (3, 4):  # both evaluated: tables.py must take the best one
        _score(more, finetuned, step, adapt=step == best)
      _export(finetuned, best)
    _finish(config("dense_mtl", seed), os.path.join(root, "sweep", "dense_mtl", f"seed{seed}"))
    for task in SEEN[:1] if seed else SEEN:  # the reference of a task is the mean of its seeds, whatever their number
      _finish(config("dense_mtl", seed, seen_tasks=(task,)), os.path.join(root, "single", task, f"seed{seed}"),
              adapt=False)
  return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  return build_runs(str(tmp_path_factory.mktemp("runs")), data_dir)


def _tables(*args):
  return subprocess.run([sys.executable, "experiments/reports/tables.py", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
  """The command on the fixture: its output folder and printed text."""
  out = str(tmp_path_factory.mktemp("report") / "tables")
  done = _tables(f"--runs={runs}/sweep/*/seed*", f"--baseline={runs}/single/*/seed*", f"--out={out}")
  assert done.returncode == 0, done.stderr[-3000:]
  return out, done.stdout


def _load(path):
  with open(path) as f:
    return json.load(f)


def _results(runs, pattern, part):
  """{workdir: {task: {metric: value}}} of the fixture's result files `pattern` (eval or adapt, one per run), read
  here without tables.py: eval's "results", adapt's "unseen"."""
  out = {}
  for path in sorted(glob.glob(os.path.join(runs, pattern))):
    workdir = os.path.dirname(os.path.dirname(path))
    payload = _load(path)
    out[workdir] = payload["results"] if part == "seen" else payload["unseen"]
  return out


def _csv(out):
  with open(os.path.join(out, "table.csv"), newline="") as f:
    return {(r["block"], r["method"], r["stage"]): r for r in csv.DictReader(f)}


def _markdown_rows(out):
  """{(block, method, stage): {column header: cell}} of table.md's two tables (seen first)."""
  with open(os.path.join(out, "table.md")) as f:
    text = f.read()
  tables, current = [], None
  for line in text.splitlines():
    if line.startswith("| method |"):
      current = [[c.strip() for c in line.strip("|").split("|")], []]
      tables.append(current)
    elif line.startswith("|---"):
      continue
    elif line.startswith("| ") and current is not None:
      current[1].append([c.strip() for c in line.strip("|").split("|")])
    else:
      current = None
  rows = {}
  for block, (head, body) in zip(("seen", "unseen"), tables):
    for cells in body:
      rows[(block, cells[0], cells[1])] = dict(zip(head, cells))
  return rows


def _mean_std(values):
  values = np.asarray(values, np.float64)
  return np.mean(values), np.std(values, ddof=1)


def test_means_and_stds_are_numpy_over_the_runs_files(runs, report):
  table = _csv(report[0])
  for label, method in (("budget", "budget"), ("dense_mtl", "dense_mtl,tiny")):
    seen = _results(runs, f"sweep/{label}/seed*/eval/test_step2.json", "seen")
    unseen = _results(runs, f"sweep/{label}/seed*/adapt/heads_step2.json", "unseen")
    assert len(seen) == len(unseen) == len(SEEDS)
    for block, results, metrics in (("seen", seen, [("segmentation", "miou"), ("segmentation", "pixel_acc"),
                                                    ("depth", "abs_err"), ("depth", "rel_err")]),
                                    ("unseen", unseen, [("edges", "ods_f"), ("has_sphere", "accuracy"),
                                                        ("has_sphere", "f1")])):
      row = table[(block, method, "as trained")]
      assert row["seeds"] == str(len(SEEDS))
      for task, metric in metrics:
        mean, std = _mean_std([r[task][metric] for r in results.values()])
        assert float(row[f"{task}/{metric}"]) == pytest.approx(mean, rel=1e-12, abs=1e-15)
        assert float(row[f"{task}/{metric} std"]) == pytest.approx(std, rel=1e-12, abs=1e-15)
    sparsity = [_load(p)["sparsity"] for p in
                [os.path.join(w, "eval", "test_step2.json") for w in seen]]
    row = table[("seen", method, "as trained")]
    assert float(row["flops_kept"]) == pytest.approx(np.mean([s["flops_kept"] for s in sparsity]))
    assert float(row["group_sparsity"]) == pytest.approx(np.mean([s["group_sparsity_total"] for s in sparsity]))
  assert float(table[("seen", "budget", "as trained")]["group_sparsity"]) > 0  # the fixture did prune


def _relative(value, reference, higher_is_better):
  return 100 * ((value - reference) if higher_is_better else (reference - value)) / reference


def test_delta_m_by_hand(runs, report):
  """Seen: each budget seed against the mean of the single-task runs of each task (LibMTL's metrics, mean within a
  task, then over tasks), then the mean and std over seeds. Unseen: against dense_mtl's adapted mean, metrics whose
  reference is 0 left out."""
  table = _csv(report[0])
  metrics = {"segmentation": {"miou": True, "pixel_acc": True}, "depth": {"abs_err": False, "rel_err": False}}
  reference = {task: {m: np.mean([r[task][m] for r in _results(runs, f"single/{task}/seed*/eval/test_step2.json",
                                                               "seen").values()]) for m in metrics[task]}
               for task in metrics}
  per_seed = [np.mean([np.mean([_relative(r[t][m], reference[t][m], up) for m, up in metrics[t].items()])
                       for t in metrics])
              for r in _results(runs, "sweep/budget/seed*/eval/test_step2.json", "seen").values()]
  row = table[("seen", "budget", "as trained")]
  assert float(row["delta_m"]) == pytest.approx(np.mean(per_seed), rel=1e-9)
  assert float(row["delta_m std"]) == pytest.approx(np.std(per_seed, ddof=1), rel=1e-9)

  unseen = {"edges": {"ods_f": True}, "has_sphere": {"accuracy": True, "f1": True}}
  dense = list(_results(runs, "sweep/dense_mtl/seed*/adapt/heads_step2.json", "unseen").values())
  reference = {t: {m: np.mean([r[t][m] for r in dense]) for m in unseen[t]} for t in unseen}
  per_seed = []
  for r in _results(runs, "sweep/budget/seed*/adapt/heads_step2.json", "unseen").values():
    tasks = [[_relative(r[t][m], reference[t][m], up) for m, up in unseen[t].items() if reference[t][m] != 0]
             for t in unseen]
    per_seed.append(np.mean([np.mean(changes) for changes in tasks if changes]))
  assert float(table[("unseen", "budget", "as trained")]["delta_m"]) == pytest.approx(np.mean(per_seed), rel=1e-9)


def test_csv_agrees_with_markdown(report):
  table, markdown = _csv(report[0]), _markdown_rows(report[0])
  assert set(table) == set(markdown) and len(table) == 6  # budget: 2 stages, dense_mtl: 1; seen and unseen
  for key, row in table.items():
    cells = markdown[key]
    assert cells["seeds"] == row["seeds"]
    for header, cell in cells.items():
      name = {"Δm (%) ↑": "delta_m", "params": "params", "FLOPs kept": "flops_kept",
              "group sparsity": "group_sparsity", "latency (ms, batch 1)": "latency_ms"}.get(
                  header, header.rsplit(" ", 1)[0].replace(" ", "/"))
      if name in ("method", "stage", "seeds"):
        continue
      if row[name] == "":
        assert cell == "–"
        continue
      mean, std = float(row[name]), row[f"{name} std"]
      if name == "params":
        expected = f"{mean:,.0f}" + (f" ± {float(std):,.0f}" if std else "")
      else:
        expected = f"{mean:.4g}" + (f" ± {float(std):.3g}" if std else "")
      assert cell == expected, (key, header)


def test_stages_sizes_and_latency_come_from_the_right_files(runs, report):
  out = report[0]
  results = _load(os.path.join(out, "results.json"))
  finetuned = os.path.join(runs, "sweep", "budget", "seed0", "finetuned")
  best = _load(os.path.join(finetuned, "checkpoints_best", "best.json"))["step"]
  (budget0,) = [r for r in results["runs"] if r["workdir"].endswith(os.path.join("budget", "seed0"))]
  assert budget0["stages"]["after fine-tuning"]["step"] == best
  assert budget0["stages"]["after fine-tuning"]["files"]["eval"] == os.path.join(finetuned, "eval",
                                                                                 f"test_step{best}.json")
  row = _csv(out)[("seen", "budget", "after fine-tuning")]
  assert row["seeds"] == "1" and row["delta_m std"] == ""  # only seed 0 was fine-tuned
  export = _load(os.path.join(finetuned, "export", "report.json"))
  evaluated = _load(os.path.join(finetuned, "eval", f"test_step{best}.json"))["sparsity"]
  assert float(row["latency_ms"]) == pytest.approx(export["pruned"]["latency_ms"]["1"])
  # the count of alive channels' weights; the export keeps zero slices of residual channels alive elsewhere
  assert float(row["params"]) == evaluated["params"] <= export["pruned"]["params"]
  assert evaluated["params"] < evaluated["params_dense"] == export["dense"]["params"]
  assert _csv(out)[("seen", "budget", "as trained")]["latency_ms"] == ""  # no export report as trained


def test_the_front_repeats_the_seen_rows_sorted_by_stage_then_flops_kept(report):
  with open(os.path.join(report[0], "table.md")) as f:
    front = f.read().split("The front (seen tasks)")[1].splitlines()
  head = [c.strip() for c in next(line for line in front if line.startswith("| method |")).strip("|").split("|")]
  assert head[:4] == ["method", "stage", "seeds", "Δm (%) ↑"] and "FLOPs kept" in head and len(head) == 8
  rows = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in front
          if line.startswith("| ") and not line.startswith("| method |")]
  seen = {key: row for key, row in _markdown_rows(report[0]).items() if key[0] == "seen"}
  assert sorted(("seen", r["method"], r["stage"]) for r in rows) == sorted(seen)
  for r in rows:
    assert r == {k: seen[("seen", r["method"], r["stage"])][k] for k in head}
  order = [(tables.STAGES.index(r["stage"]), -float(r["FLOPs kept"].split(" ± ")[0])) for r in rows]
  assert order == sorted(order)


def test_latex_is_booktabs_with_the_same_cells(report):
  with open(os.path.join(report[0], "table.tex")) as f:
    tex = f.read()
  assert tex.startswith("% Made by `python ")
  assert tex.count(r"\begin{tabular}") == tex.count(r"\bottomrule") == tex.count(r"\toprule") == 2
  assert tex.count(r"\midrule") >= 3 and r"\cmidrule(lr){4-5}" in tex
  body = [line for line in tex.splitlines() if line.startswith(("budget", "dense"))]
  assert len(body) == 6
  seen_columns = 3 + 4 + 5  # method, stage, seeds; 4 metrics; Δm and the 4 cost columns
  assert [line.count(" & ") + 1 for line in body[:3]] == [seen_columns] * 3
  assert r"abs\_err $\downarrow$" in tex and r"$\Delta_m$ (\%) $\uparrow$" in tex and r" $\pm$ " in tex
  table = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
  assert "dense\\_mtl,tiny" in table and "_mtl" not in table.replace("\\_mtl", "")


def test_report_records_provenance_and_references(report):
  out, stdout = report
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
  with open(os.path.join(out, "table.md")) as f:
    first = f.readline()
  assert first.startswith("Made by `python experiments/reports/tables.py '--runs=") and f"at commit {head[:10]}" in first
  assert _load(os.path.join(out, "results.json"))["provenance"]["commit"] == head
  assert "against the mean over seeds of 3 single-task runs (--baseline)" in stdout
  assert "the runs labelled 'dense_mtl,tiny' (2 seeds; unseen tasks have no single-task reference)" in stdout
  assert "rows after fine-tuning: against them as trained" in stdout  # the baselines have no fine-tuned stage


@pytest.mark.parametrize("name", ["front.png", "channels.png", "lambda.png"])
def test_plots_are_written(report, name):
  image = mpimg.imread(os.path.join(report[0], name))
  height, width = image.shape[:2]
  assert 400 <= width <= 960 and height >= 300
  assert np.std(image[..., :3]) > 0.05  # not blank
  assert len({tuple(p) for p in image[..., :3].reshape(-1, 3)[::97]}) > 20  # drawn in several colours


def test_report_only_redraws_the_front_from_results_json(report, tmp_path):
  """A report whose runs are gone: --report_only redraws front.png from results.json alone, pixel for pixel as the
  full command drew it."""
  shutil.copy(os.path.join(report[0], "results.json"), tmp_path / "results.json")
  done = _tables(f"--out={tmp_path}", "--report_only")
  assert done.returncode == 0, done.stderr[-2000:]
  assert sorted(os.listdir(tmp_path)) == ["front.png", "results.json"]
  assert np.array_equal(mpimg.imread(tmp_path / "front.png"), mpimg.imread(os.path.join(report[0], "front.png")))


def test_report_only_without_results_is_one_line(tmp_path):
  done = _tables(f"--out={tmp_path}", "--report_only")
  assert done.returncode == 2 and done.stderr.strip() == (
      f"error: --out={tmp_path}: no readable results.json of tables.py (FileNotFoundError: [Errno 2] No such file "
      f"or directory: '{tmp_path}/results.json')")
  assert not os.listdir(tmp_path)


def test_runs_in_a_bucket_make_the_tables_their_local_copies_make(runs, store, tmp_path):
  shutil.copytree(runs, store / "bucket" / "runs", ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
  tables_of = {}
  for root in (runs, "gs://bucket/runs"):
    markdown, _ = tables.command([f"{root}/sweep/*/seed*"], str(tmp_path / root.replace("/", "_")),
                                 baseline=[f"{root}/single/*/seed*"])
    tables_of[root] = markdown.replace(root, "ROOT")
  assert tables_of[runs] == tables_of["gs://bucket/runs"] and "| budget |" in tables_of[runs]


def _copy_files(source, destination):
  """The run directory `source` without checkpoints and TensorBoard events (all tables.py reads) at `destination`."""
  shutil.copytree(source, destination, ignore=shutil.ignore_patterns("checkpoints*", "tensorboard", "export"))
  return destination


@pytest.fixture(scope="module")
def broken(runs, tmp_path_factory):
  """Copies of fixture runs, each with one thing wrong."""
  root = tmp_path_factory.mktemp("broken")
  budget = os.path.join(runs, "sweep", "budget", "seed0")
  unevaluated = _copy_files(budget, str(root / "unevaluated" / "seed0"))
  shutil.rmtree(os.path.join(unevaluated, "eval"))
  other_data = _copy_files(budget, str(root / "other_data" / "seed0"))
  config = _load(os.path.join(other_data, "config.json"))
  config["data"]["overrides"]["resolution"] = 48
  with open(os.path.join(other_data, "config.json"), "w") as f:
    json.dump(config, f)
  (root / "a_file").write_text("not a folder")
  return root


@pytest.mark.parametrize("case", ["no_match", "unevaluated", "other_data", "out_is_a_file"])
def test_bad_input_is_one_line_and_writes_nothing(runs, broken, tmp_path, case):
  sweep = f"--runs={runs}/sweep/*/seed*"
  out = str(tmp_path / "out")
  args, message = {
      "no_match": ([f"--runs={runs}/nowhere/*", f"--out={out}"], f"--runs={runs}/nowhere/* matches no directory"),
      "unevaluated": ([sweep, f"--runs={broken}/unevaluated/seed0", f"--out={out}"],
                      f"{broken}/unevaluated/seed0 has no eval/test_step<N>.json: run python experiments/evaluate.py "
                      f"--workdir={broken}/unevaluated/seed0"),
      "other_data": ([sweep, f"--runs={broken}/other_data/seed0", f"--out={out}"],
                     "runs of different datasets are mixed"),
      "out_is_a_file": ([sweep, f"--out={broken}/a_file"], f"--out={broken}/a_file exists and is not a directory"),
  }[case]
  done = _tables(*args)
  lines = done.stderr.strip().splitlines()
  assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
      done.stderr[-2000:]
  assert not os.path.exists(out) and (broken / "a_file").read_text() == "not a folder"


@pytest.mark.parametrize("case,message", [
    ("baseline_of_two_tasks", "a baseline is a single-task run of one of ['segmentation', 'depth']"),
    ("baseline_missing_a_task", "no --baseline run was trained on ['depth']"),
    ("unknown_unseen_baseline", "--unseen_baseline=maml: no run among --runs has that label or method"),
    ("other_tasks", "runs of different tasks are mixed"),
    ("seed_twice", "label 'budget' has seed 0 twice"),
    ("unadapted_reference", "a Δm reference run, has no adapted results at step 2: run python "
                            "experiments/adapt_unseen.py --workdir="),
])
def test_other_bad_input_is_named_and_writes_nothing(runs, tmp_path, case, message):
  """The messages tables.command raises (the command line prints each as its one error line)."""
  sweep, out = [f"{runs}/sweep/*/seed*"], str(tmp_path / "out")
  kwargs = {
      "baseline_of_two_tasks": dict(runs=sweep, baseline=[f"{runs}/sweep/budget/seed0"]),
      "baseline_missing_a_task": dict(runs=sweep, baseline=[f"{runs}/single/segmentation/seed*"]),
      "unknown_unseen_baseline": dict(runs=sweep, unseen_baseline="maml", unseen_baseline_given=True),
      "other_tasks": dict(runs=[*sweep, f"{runs}/single/depth/seed0"]),
      "seed_twice": dict(runs=[*sweep, _copy_files(f"{runs}/sweep/budget/seed0", str(tmp_path / "again"))]),
      "unadapted_reference": None,
  }[case]
  if case == "unadapted_reference":  # the only dense_mtl run has lost its adapt/ files
    workdir = _copy_files(f"{runs}/sweep/dense_mtl/seed0", str(tmp_path / "dense" / "seed0"))
    shutil.rmtree(os.path.join(workdir, "adapt"))
    kwargs = dict(runs=[f"{runs}/sweep/budget/seed*", workdir])
  with pytest.raises(ConfigError, match=re.escape(message)):
    tables.command(out=out, **kwargs)
  assert not os.path.exists(out)


def test_headline_columns_and_no_baseline(runs, tmp_path):
  """--metrics=headline: one column per task; without --baseline no seen Δm and no front.png."""
  markdown, notes = tables.command([f"{runs}/sweep/*/seed*"], str(tmp_path), metrics="headline")
  header = next(line for line in markdown.splitlines() if line.startswith("| method |"))
  assert header == ("| method | stage | seeds | segmentation miou ↑ | depth abs_err ↓ | params | FLOPs kept | "
                    "group sparsity | latency (ms, batch 1) |")
  assert notes == ["no front.png: without --baseline there is no Δm"]
  assert sorted(os.listdir(tmp_path)) == ["channels.png", "lambda.png", "results.json", "table.csv", "table.md",
                                          "table.tex"]


def test_the_fine_tuned_stage_is_the_step_best_json_names(runs, tmp_path):
  """With best.json naming step 3 (the run also has eval files of step 4), the fine-tuned stage is step 3's."""
  workdir = _copy_files(f"{runs}/sweep/budget/seed0", str(tmp_path / "run"))
  best = os.path.join(workdir, "finetuned", "checkpoints_best", "best.json")
  os.makedirs(os.path.dirname(best), exist_ok=True)
  for step in (3, 4):
    with open(best, "w") as f:
      json.dump({"step": step, "metric": "segmentation/miou", "value": 0.1, "split": "validation"}, f)
    stage = tables.read_run(workdir, "test", "heads").stages["after fine-tuning"]
    assert stage.step == step
    assert stage.seen == _load(os.path.join(workdir, "finetuned", "eval", f"test_step{step}.json"))["results"]
  os.remove(best)  # no best checkpoint kept: the highest evaluated step
  assert tables.read_run(workdir, "test", "heads").stages["after fine-tuning"].step == 4


def test_unseen_tasks_adapted_only_after_fine_tuning(runs, tmp_path):
  """A sweep that adapts only the fine-tuned networks (the sweep config's `adapt`): the unseen block has that stage
  alone, its Δm against the same stage of the reference runs."""
  workdir = _copy_files(f"{runs}/sweep/budget/seed0", str(tmp_path / "budget" / "seed0"))
  shutil.rmtree(os.path.join(workdir, "adapt"))
  out = str(tmp_path / "out")
  tables.command([workdir], out, unseen_baseline="budget", unseen_baseline_given=True)
  unseen = {key: row for key, row in _csv(out).items() if key[0] == "unseen"}
  assert list(unseen) == [("unseen", "budget", "after fine-tuning")]
  assert float(unseen[("unseen", "budget", "after fine-tuning")]["delta_m"]) == 0.0  # its own reference


def _real_data_table(module, variant, manual_dir, tmp_path):
  """`variant,tiny` and dense_mtl (adapted), and a single-task dense run per seen task, one seed each, on a fixture
  download; then the tables. Returns (seen tasks, unseen tasks, table.csv rows, ROOT)."""
  root = str(tmp_path / "runs")

  def config(arg, **overrides):
    c = _config(module, arg, 0, **overrides)
    c.data.manual_dir, c.data.data_dir = manual_dir, str(tmp_path / "tfds")
    return c

  method = variant.split(",")[0]
  _finish(config(f"{variant},tiny"), os.path.join(root, "sweep", method, "seed0"))
  dense = variant.replace(method, "dense_mtl")
  _finish(config(f"{dense},tiny"), os.path.join(root, "sweep", "dense_mtl", "seed0"))
  seen, unseen = config(f"{variant},tiny").seen_tasks, config(f"{variant},tiny").unseen_tasks
  for task in seen:
    _finish(config(f"{dense},tiny", seen_tasks=(task,)), os.path.join(root, "single", task, "seed0"), adapt=False)
  markdown, _ = tables.command([f"{root}/sweep/*/seed*"], str(tmp_path / "out"), [f"{root}/single/*/seed*"])
  assert "Seen tasks. " in markdown and "Unseen tasks, " in markdown
  return seen, unseen, _csv(str(tmp_path / "out")), root


def _check_real_data_table(seen, unseen, table, root, label):
  row = table[("seen", label, "as trained")]
  evaluated = _load(os.path.join(root, "sweep", label.split(",")[0], "seed0", "eval", "test_step2.json"))
  for task in seen:
    for metric, value in evaluated["results"][task].items():
      if f"{task}/{metric}" in row:
        assert float(row[f"{task}/{metric}"]) == pytest.approx(value, rel=1e-12)
  assert np.isfinite(float(row["delta_m"])) and row["delta_m std"] == ""
  adapted = table[("unseen", label, "as trained")]
  assert {key.split("/")[0] for key, value in adapted.items() if "/" in key and value != ""} == set(unseen)
  assert np.isfinite(float(adapted["delta_m"]))


@pytest.mark.slow
def test_nyuv2_tables_on_a_fixture_download(tmp_path):
  write_nyud_mt(tmp_path / "download", "npy")
  seen, unseen, table, root = _real_data_table(nyuv2, "budget", str(tmp_path / "download"), tmp_path)
  assert {"normals/angle_mean", "normals/within_11.25", "depth/rel_err"} <= set(table[("seen", "budget,tiny",
                                                                                         "as trained")])
  _check_real_data_table(seen, unseen, table, root, "budget,tiny")


@pytest.mark.slow
def test_celebamask_hq_tables_on_a_fixture_download(tmp_path):
  _write_release(str(tmp_path / "CelebAMask-HQ"))
  seen, unseen, table, root = _real_data_table(celebamask_hq, "meta_sparsity,hair_skin3",
                                               str(tmp_path / "CelebAMask-HQ"), tmp_path)
  assert {"Male/accuracy", "Male/f1", "Smiling/f1"} <= set(table[("seen", "meta_sparsity,hair_skin3,tiny",
                                                                   "as trained")])
  _check_real_data_table(seen, unseen, table, root, "meta_sparsity,hair_skin3,tiny")


def _run_with_alive(label, config, alive):
  stage = tables.Stage(workdir=label, step=2, seen={}, sparsity={"alive_channels": list(alive)}, unseen=None,
                       export=None, files={})
  return tables.Run(workdir=label, label=label, method="budget", seed=0, config=config.to_dict(),
                    stages={tables.STAGES[0]: stage})


def test_kept_channels_compare_per_conv_when_residual_streams_are_tied():
  per_conv = synthetic.get_config("budget,tiny")
  tied = synthetic.get_config("budget,flops=0.5,tiny")
  convs, groups, _ = tables._layout_of(_run_with_alive("x", per_conv, []))
  # tiny: a stem and one basic block per stage with a projection shortcut; tied, each stage's conv2 and shortcut
  # are one layer, after the stage's conv1
  stages = sorted({c.split("/")[1].split("_")[0] for c in convs} - {"stage0"})
  tied_alive = [2] + [v for s, _ in enumerate(stages) for v in (10 + s, 20 + s)]
  per_conv_alive = list(range(1, len(convs) + 1))
  layers, channels, series = tables.channel_series([_run_with_alive("per conv", per_conv, per_conv_alive),
                                                    _run_with_alive("tied", tied, tied_alive)])
  assert layers == list(convs) and list(channels) == list(groups)
  np.testing.assert_array_equal(series[0]["mean"], per_conv_alive)
  want = {"backbone/stage0_conv1": 2}
  for s, stage in enumerate(stages):
    want.update({f"backbone/{stage}_block0/conv1": 10 + s, f"backbone/{stage}_block0/conv2": 20 + s,
                 f"backbone/{stage}_block0/shortcut": 20 + s})
  np.testing.assert_array_equal(series[1]["mean"], [want[c] for c in convs])
  with pytest.raises(ConfigError, match="label 'tied'.*differ"):
    tables.channel_series([_run_with_alive("per conv", per_conv, per_conv_alive),
                           _run_with_alive("tied", tied, per_conv_alive)])
