"""Reports record their provenance, stay out of docs/, and the quickstart beats the untrained network and prints
what the README shows."""
import json
import os
import re
import subprocess
import sys

import pytest

from experiments.run import provenance
from msp.export.report import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_report_records_commit_and_command(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "argv", ["experiments/some_report.py", "--out=x y", "--seeds=0,1"])
  p = provenance.write_report(str(tmp_path / "r"), "| a |\n|---|", {"value": 1.5})
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
  assert p["commit"] == head and p["command"] == "python experiments/some_report.py '--out=x y' --seeds=0,1"
  text = (tmp_path / "r" / "report.md").read_text()
  assert text.startswith(f"Made by `python experiments/some_report.py '--out=x y' --seeds=0,1` at commit {head[:10]}")
  assert json.loads((tmp_path / "r" / "results.json").read_text()) == {"provenance": p, "value": 1.5}


def test_reports_never_write_into_docs():
  with pytest.raises(ValueError, match="lies in docs/"):
    provenance.write_report(os.path.join(ROOT, "docs", "x"), "text", {})
  assert not os.path.exists(os.path.join(ROOT, "docs", "x"))


def test_the_lambda_report_reports_a_diverged_run(tmp_path):
  """A variant the safeguards stopped is a row of the table that says so, and has no trajectory panel."""
  with open(tmp_path / "fresh_reference.json", "w") as f:
    json.dump({"variant": "reference", "regime": "fresh", "stopped": "step 121: 26 of the last 50 steps were skipped"},
              f)
  done = subprocess.run([sys.executable, "experiments/reports/lambda_trajectories.py", f"--out={tmp_path}",
                         "--report_only"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": ROOT})
  assert done.returncode == 0, done.stderr[-2000:]
  assert ("| fresh | reference | – | – | – | – | – | diverged, stopped at step 121: 26 of the last 50 steps were "
          "skipped |") in (tmp_path / "report.md").read_text()
  assert not (tmp_path / "lambda_trajectories_fresh.png").exists()


def _seeds(tmp_path, *args):
  return subprocess.run([sys.executable, "experiments/reports/seed_variation.py", f"--workdir={tmp_path / 'runs'}",
                         f"--out={tmp_path / 'report'}", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=1800, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.slow
def test_seeds_report_on_the_tiny_config(tmp_path):
  data_dir = tmp_path / "tfds"
  out = _seeds(tmp_path, "--config=experiments/configs/synthetic.py:budget,tiny", "--seeds=0,1",
               f"--config.data.data_dir={data_dir}")
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "report" / "results.json").read_text())
  assert results["seeds"] == [0, 1] and len(results["per_seed"]) == 2
  assert set(results["wins"]) == {"segmentation", "depth", "checkered_floor", "edges"}
  report = (tmp_path / "report" / "report.md").read_text()
  assert "(mean ± std)" in report and "### seed 1" in report and "better in |" in report
  # seed 1's run is its own: a different initialisation gives different scores
  seen = [r["seen"]["meta-trained"]["depth"]["abs_err"] for r in results["per_seed"]]
  assert seen[0] != seen[1]


@pytest.mark.slow
def test_quickstart_beats_the_untrained_network_in_seed_0(tmp_path):
  """The quickstart's configuration (600 outer steps, about 7 min on 2 cores): every seen and unseen task better than
  the untrained network in every metric (`make reports` runs seeds 0, 1, 2)."""
  out = _seeds(tmp_path, "--seeds=0")
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "report" / "results.json").read_text())
  assert results["wins"] == {task: 1 for task in results["wins"]}, results["wins"]
  assert results["every_task_beats_untrained"] is True
  _assert_the_readme_shows(_seed_table((tmp_path / "report" / "report.md").read_text(), 0))


def _seed_table(report: str, seed: int) -> str:
  return report.split(f"### seed {seed}\n\n```\n", 1)[1].split("\n```", 1)[0]


def _readme_quickstart() -> tuple[str, str]:
  """(the README quickstart section's prose, its printed block)."""
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    section = f.read().split("## Quickstart\n", 1)[1].split("\n## ", 1)[0]
  prose, block = section.split("\n```\n", 1)
  return prose, block.split("\n```", 1)[0]


def _assert_the_readme_shows(printed: str) -> None:
  """The README's quickstart block is what the quickstart prints: line for line with every number masked on any
  machine, and exactly on the machine the README names."""
  prose, shown = _readme_quickstart()
  numbers = re.compile(r"\d+(\.\d+)?(e-?\d+)?")
  assert numbers.sub("#", shown).split("\n") == numbers.sub("#", printed).split("\n")
  if machine() in " ".join(prose.split()):
    assert shown == printed
