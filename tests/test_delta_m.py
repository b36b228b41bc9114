"""Δm on a case worked by hand, its conventions, the results-file format and the command line."""
import json
import os
import subprocess
import sys

import pytest

from experiments.reports.delta_m import command
from msp.tasks.delta_m import delta_m, load_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# segmentation: miou +10 %, pixel_acc −5 % (both higher is better) → task mean +2.5 %
# depth: abs_err 0.50 → 0.45 is 10 % lower, and lower is better → +10 %
BASELINE = {"segmentation": {"miou": 0.40, "pixel_acc": 0.80}, "depth": {"abs_err": 0.50}}
RESULTS = {"segmentation": {"miou": 0.44, "pixel_acc": 0.76, "miou/3": 9.0}, "depth": {"abs_err": 0.45},
           "normals": {"angle_mean": 20.0}}


def test_hand_worked_case_in_both_conventions():
  d = delta_m(RESULTS, BASELINE)
  assert d.per_metric == pytest.approx({("segmentation", "miou"): 10.0, ("segmentation", "pixel_acc"): -5.0,
                                        ("depth", "abs_err"): 10.0})
  assert d.per_task == pytest.approx({"segmentation": 2.5, "depth": 10.0})
  assert d.convention == "task_mean" and d.value == pytest.approx((2.5 + 10.0) / 2)
  assert delta_m(RESULTS, BASELINE, "metric_mean").value == pytest.approx((10.0 - 5.0 + 10.0) / 3)
  only = delta_m(RESULTS, BASELINE, metrics_to_compare=[("segmentation", "pixel_acc")])
  assert only.value == pytest.approx(-5.0)


@pytest.mark.parametrize("results,baseline,message", [
    (RESULTS, {"segmentation": {"miou": 0.0}}, "segmentation:miou: cannot compare"),
    ({"a": {"unknown": 1.0}}, {"a": {"unknown": 2.0}}, "unknown direction"),
    ({"a": {"miou": 1.0}}, {"b": {"miou": 1.0}}, "no metric to compare")])
def test_what_cannot_be_compared_is_named(results, baseline, message):
  with pytest.raises(ValueError, match=message):
    delta_m(results, baseline, metric_set="all")


def test_command_reads_evaluate_json_and_merges_baselines(tmp_path, capsys):
  (tmp_path / "run.json").write_text(json.dumps({"step": 5, "split": "test", "results": RESULTS, "sparsity": {}}))
  (tmp_path / "seg.json").write_text(json.dumps({"results": {"segmentation": BASELINE["segmentation"]}}))
  (tmp_path / "depth.json").write_text(json.dumps({"depth": BASELINE["depth"]}))
  d = command(str(tmp_path / "run.json"), f"{tmp_path / 'seg.json'},{tmp_path / 'depth.json'}",
              output=str(tmp_path / "out.json"))
  assert d.value == pytest.approx(6.25)
  printed = capsys.readouterr().out
  assert "Δm = +6.25 % (convention task_mean" in printed and "| depth | abs_err ↓ | 0.5 | 0.45 | +10.00 |" in printed
  assert json.loads((tmp_path / "out.json").read_text())["delta_m"] == pytest.approx(6.25)
  with pytest.raises(ValueError, match="more than one"):
    load_results([str(tmp_path / "seg.json"), str(tmp_path / "seg.json")])


def test_default_compares_libmtl_metric_sets_and_all_is_an_option():
  """LibMTL compares depth by abs_err and rel_err only: delta1 of a weak baseline (0.02 → 0.04 is +100 %) must not
  decide Δm unless asked for with metric_set="all"."""
  baseline = {"depth": {"abs_err": 0.50, "rel_err": 0.20, "rmse": 0.70, "delta1": 0.02},
              "normals": {"angle_mean": 40.0, "angle_median": 38.0, "within_11.25": 0.10, "within_22.5": 0.30,
                          "within_30": 0.40}}
  results = {"depth": {"abs_err": 0.55, "rel_err": 0.22, "rmse": 0.77, "delta1": 0.04},
             "normals": {"angle_mean": 44.0, "angle_median": 41.8, "within_11.25": 0.09, "within_22.5": 0.27,
                         "within_30": 0.36}}
  libmtl = delta_m(results, baseline)
  assert libmtl.metric_set == "libmtl"
  assert set(libmtl.per_metric) == {("depth", "abs_err"), ("depth", "rel_err"), *(("normals", m) for m in
                                    ("angle_mean", "angle_median", "within_11.25", "within_22.5", "within_30"))}
  assert libmtl.per_task == pytest.approx({"depth": -10.0, "normals": -10.0})
  every = delta_m(results, baseline, metric_set="all")
  # depth: abs_err −10, rel_err −10, rmse −10, delta1 +100 → +17.5: the sign of the task flips
  assert every.per_task["depth"] == pytest.approx(17.5) and every.metric_set == "all"
  with pytest.raises(ValueError, match="metric_set"):
    delta_m(results, baseline, metric_set="bogus")


def test_percent_against_fraction_is_refused():
  with pytest.raises(ValueError, match=r"within_30 is 57.2 in the results, but it is a fraction in \[0, 1\] — a "
                                       "percentage"):
    delta_m({"normals": {"within_30": 57.2}}, {"normals": {"within_30": 0.57}})


def test_adaptation_results_are_read(tmp_path):
  (tmp_path / "adapt.json").write_text(json.dumps(
      {"step": 5, "train": "heads", "unseen": {"edges": {"ods_f": 0.6}}, "seen": {"depth": {"abs_err": 0.4}}}))
  (tmp_path / "seen_only.json").write_text(json.dumps({"unseen": {"edges": {"ods_f": 0.5}}, "seen": None}))
  assert load_results([str(tmp_path / "adapt.json")]) == {"edges": {"ods_f": 0.6}, "depth": {"abs_err": 0.4}}
  d = command(str(tmp_path / "adapt.json"), str(tmp_path / "seen_only.json"))
  assert d.value == pytest.approx(20.0)


def test_command_line_writes_the_output_and_refuses_bad_input_in_one_line(tmp_path):
  (tmp_path / "run.json").write_text(json.dumps({"results": RESULTS}))
  (tmp_path / "base.json").write_text(json.dumps(BASELINE))

  def delta_m_command(*args):
    return subprocess.run([sys.executable, "experiments/reports/delta_m.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})

  done = delta_m_command(f"--results={tmp_path / 'run.json'}", f"--baseline={tmp_path / 'base.json'}",
                         "--convention=metric_mean", f"--output={tmp_path / 'out.json'}")
  assert done.returncode == 0, done.stderr[-2000:]
  assert "convention metric_mean" in done.stdout
  assert json.loads((tmp_path / "out.json").read_text())["convention"] == "metric_mean"
  for args, message in [([f"--results={tmp_path / 'run.json'}"], "Flag --baseline must have a value"),
                        ([f"--results={tmp_path / 'run.json'}", f"--baseline={tmp_path / 'nope.json'}"],
                         "No such file or directory")]:
    refused = delta_m_command(*args)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        refused.stderr[-2000:]


# What adapt_unseen.py wrote for `synthetic.py:budget,tiny` after 2 steps (rounded): the seen attribute head never
# predicts "present" (F1 = 0 by scikit-learn's zero_division) and a new head has barely started.
TINY_ADAPTED = {"step": 2, "train": "heads", "final_loss": 0.864,
                "unseen": {"edges": {"ods_f": 0.1194}, "has_sphere": {"accuracy": 0.4375, "f1": 0.5263,
                                                                      "accuracy/0": 0.4375, "f1/0": 0.5263}},
                "seen": {"segmentation": {"miou": 0.0808, "pixel_acc": 0.3055},
                         "depth": {"abs_err": 2.694, "rel_err": 0.8788, "rmse": 3.004, "delta1": 0.00311},
                         "checkered_floor": {"accuracy": 0.375, "f1": 0.0, "accuracy/0": 0.375, "f1/0": 0.0}}}


def test_an_adaptation_file_with_an_undefined_relative_change_is_compared(tmp_path, capsys):
  """A tiny run's adapt file against itself failed with 'checkered_floor:f1: cannot compare 0.0 with baseline 0.0':
  one metric of a zero baseline stopped Δm. It is left out and named; every other metric counts."""
  (tmp_path / "adapt.json").write_text(json.dumps(TINY_ADAPTED))
  d = command(str(tmp_path / "adapt.json"), str(tmp_path / "adapt.json"), output=str(tmp_path / "out.json"))
  assert d.value == 0.0 and set(d.left_out) == {("checkered_floor", "f1")}
  assert "baseline 0.0" in d.left_out["checkered_floor", "f1"]
  assert set(d.per_task) == {"edges", "has_sphere", "segmentation", "depth", "checkered_floor"}
  assert "left out: checkered_floor:f1" in capsys.readouterr().out
  assert list(json.loads((tmp_path / "out.json").read_text())["left_out"]) == ["checkered_floor:f1"]
  nan_f1 = {"attr": {"accuracy": 0.5, "f1": float("nan")}}  # zero_division=nan
  assert delta_m(nan_f1, {"attr": {"accuracy": 0.4, "f1": 0.3}}).per_metric == {("attr", "accuracy"): pytest.approx(25.0)}


def test_a_weak_new_head_is_not_taken_for_a_percentage():
  """A new head's F1 of 0.011 against the reference's 0.6 (55× apart) was refused as 'percent against fraction';
  only a fraction outside [0, 1] is a percentage for certain."""
  weak = {"has_sphere": {"accuracy": 0.52, "f1": 0.011}}
  reference = {"has_sphere": {"accuracy": 0.60, "f1": 0.60}}
  d = delta_m(weak, reference)
  assert d.per_metric[("has_sphere", "f1")] == pytest.approx(100 * (0.011 - 0.6) / 0.6)
  with pytest.raises(ValueError, match=r"has_sphere:f1 is 60.0 in the baseline, but it is a fraction"):
    delta_m(weak, {"has_sphere": {"accuracy": 0.6, "f1": 60.0}})
  # metres and degrees cannot be a percentage: a 60× better abs_err is compared
  assert delta_m({"depth": {"abs_err": 0.01}}, {"depth": {"abs_err": 0.6}}).value == pytest.approx(100 * 0.59 / 0.6)
