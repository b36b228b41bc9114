"""Δm on a case worked by hand, its conventions, the results-file format and the command line."""
import json

import pytest

from msp.tasks.delta_m import delta_m, load_results, main

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
    delta_m(results, baseline)


def test_command_reads_evaluate_json_and_merges_baselines(tmp_path, capsys):
  (tmp_path / "run.json").write_text(json.dumps({"step": 5, "split": "test", "results": RESULTS, "sparsity": {}}))
  (tmp_path / "seg.json").write_text(json.dumps({"results": {"segmentation": BASELINE["segmentation"]}}))
  (tmp_path / "depth.json").write_text(json.dumps({"depth": BASELINE["depth"]}))
  d = main([f"--results={tmp_path / 'run.json'}", f"--baseline={tmp_path / 'seg.json'},{tmp_path / 'depth.json'}",
            f"--output={tmp_path / 'out.json'}"])
  assert d.value == pytest.approx(6.25)
  printed = capsys.readouterr().out
  assert "Δm = +6.25 % (convention task_mean" in printed and "| depth | abs_err ↓ | 0.5 | 0.45 | +10.00 |" in printed
  assert json.loads((tmp_path / "out.json").read_text())["delta_m"] == pytest.approx(6.25)
  with pytest.raises(ValueError, match="more than one"):
    load_results([str(tmp_path / "seg.json"), str(tmp_path / "seg.json")])
