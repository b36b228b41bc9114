"""The package layering: the library, its data layer and the runs built on both import in one direction only."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# package → the first-party packages it must not import
FORBIDDEN = {"msp": ("data_pipelines", "experiments", "benchmarks"), "data_pipelines": ("experiments", "benchmarks")}


def imported_packages(path: pathlib.Path) -> set[str]:
  """Top-level package names of every import statement in a file (inside functions too)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module.split(".")[0])
  return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
  offenders = [f"{path.relative_to(ROOT)} imports {name}" for path in sorted((ROOT / package).rglob("*.py"))
               for name in sorted(imported_packages(path) & set(FORBIDDEN[package]))]
  assert not offenders, offenders


def test_the_check_sees_imports_inside_functions(tmp_path):
  source = tmp_path / "m.py"
  source.write_text("def f():\n  from data_pipelines.episodes import batch_sampler\n  import experiments.train\n")
  assert imported_packages(source) == {"data_pipelines", "experiments"}
