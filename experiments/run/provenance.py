"""Provenance for reports: every report says which commit and which exact command produced it.

A number in the README is a claim that the code prints it; `make reports` reruns every report the README quotes,
and each report's header (`provenance_line`) names the commit (with `+uncommitted changes` when the tree was dirty),
the command line, the machine and the date, so a reader can rerun exactly what made it.
"""
import datetime
import json
import os
import shlex
import subprocess
import sys
from typing import Sequence

import numpy as np

from msp.export.report import machine

REPORTS_ROOT = "runs/reports"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository


def _git(*args: str) -> str:
  try:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""


def provenance() -> dict[str, str]:
  """{"commit": hash or "unknown", "dirty": "yes"/"no", "command": the command line as typed, "machine", "date"}."""
  commit = _git("rev-parse", "HEAD") or "unknown"
  dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
  return {"commit": commit, "dirty": "yes" if dirty else "no",
          "command": shlex.join(["python", *sys.argv]), "machine": machine(),
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def provenance_line(p: dict[str, str]) -> str:
  """Markdown: `Made by `COMMAND` at commit abc1234 (+uncommitted changes) on MACHINE, DATE.`"""
  dirty = " (+uncommitted changes)" if p["dirty"] == "yes" else ""
  return f"Made by `{p['command']}` at commit {p['commit'][:10]}{dirty} on {p['machine']}, {p['date']}."


def mean_std(values: Sequence[float], separator: str = " ± ") -> str:
  """`mean ± std` of N numbers (std with ddof = 1; the mean alone when N = 1): the mean to 4 significant digits, the
  std to 3; `separator` goes between them (LaTeX: " $\\pm$ ")."""
  values = np.asarray(values, np.float64)
  spread = f"{separator}{np.std(values, ddof=1):.3g}" if len(values) > 1 else ""
  return f"{np.mean(values):.4g}{spread}"


def check_out(out: str) -> None:
  """ValueError unless `out` can be a report folder: not in the repository's docs/ (copies there are made by hand),
  not an existing file."""
  docs = os.path.join(ROOT, "docs")
  if os.path.abspath(out).startswith(docs + os.sep) or os.path.abspath(out) == docs:
    raise ValueError(f"--out={out} lies in docs/: reports write under runs/ (copy them into docs/ deliberately)")
  if os.path.lexists(out) and not os.path.isdir(out):
    raise ValueError(f"--out={out} exists and is not a directory")


def write_report(out: str, markdown: str, payload: dict, started: dict[str, str] | None = None,
                 name: str = "report") -> dict[str, str]:
  """Writes OUT/<name>.md (provenance line, then `markdown`) and OUT/results.json (payload + provenance); returns
  the provenance: `started` (take `provenance()` when the work starts: the tree may change while a long report
  runs), else the provenance now. Refuses what `check_out` refuses."""
  check_out(out)
  os.makedirs(out, exist_ok=True)
  p = started or provenance()
  with open(os.path.join(out, f"{name}.md"), "w", encoding="utf-8") as f:
    f.write(provenance_line(p) + "\n\n" + markdown.rstrip() + "\n")
  with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
    json.dump({"provenance": p, **payload}, f, indent=1, default=float)
  return p
