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
  source.write_text("def f():\n  from data_pipelines.episodes import batch_sampler\n  import experiments.run.training\n")
  assert imported_packages(source) == {"data_pipelines", "experiments"}


# msp's subpackages from the bottom up: each may import only those before it (and msp/schema.py, msp/cli.py).
MSP_LAYERS = ("parallel", "tasks", "models", "sparsity", "meta", "train", "export")
# experiments/: the launch scripts (its own modules) sit on the run layer, which the report generators use too.
EXPERIMENTS_FORBIDDEN = {"run": ("experiments.reports",), "configs": ("experiments.reports",)}


def _msp_imports(path: pathlib.Path) -> set[str]:
  """The msp subpackages (`msp.<sub>`) a file imports."""
  subs = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
        [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
    subs.update(n.split(".")[1] for n in names if n.startswith("msp.") and len(n.split(".")) > 1)
  return subs


@pytest.mark.parametrize("layer", MSP_LAYERS)
def test_msp_subpackages_import_only_the_layers_below(layer):
  above = set(MSP_LAYERS[MSP_LAYERS.index(layer) + 1:])
  offenders = [f"{path.relative_to(ROOT)} imports msp.{sub}" for path in sorted((ROOT / "msp" / layer).rglob("*.py"))
               for sub in sorted(_msp_imports(path) & above)]
  assert not offenders, offenders


def test_the_layer_check_sees_an_upward_import(tmp_path):
  source = tmp_path / "m.py"
  source.write_text("import jax\nfrom msp.sparsity import GroupSpec\nimport msp.train.loop\n")
  assert _msp_imports(source) == {"sparsity", "train"}


@pytest.mark.parametrize("folder", sorted(EXPERIMENTS_FORBIDDEN))
def test_the_run_layer_and_the_configs_do_not_import_the_layers_above(folder):
  offenders = []
  for path in sorted((ROOT / "experiments" / folder).rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      module = node.module if isinstance(node, ast.ImportFrom) and node.level == 0 else None
      if module and (module.startswith(EXPERIMENTS_FORBIDDEN[folder]) or module == "experiments"):
        offenders.append(f"{path.relative_to(ROOT)} imports {module}")
  assert not offenders, offenders


def test_no_two_experiment_modules_differ_only_by_a_suffix():
  """train.py beside meta_train.py's run layer, sweeping.py beside sweep.py: names that say the same thing."""
  stems = sorted(p.stem for p in (ROOT / "experiments").rglob("*.py")
                 if p.stem != "__init__" and "configs" not in p.parts)
  pairs = [(a, b) for a in stems for b in stems if a != b and b.startswith(a)] + [
      (a, a) for a in set(stems) if stems.count(a) > 1]
  assert not pairs, pairs
