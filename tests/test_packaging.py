"""What `pip install .` installs: the distribution meta-sparsity, with only the `msp` package (experiments/ and
data_pipelines/ would shadow a user's own folders of those names), requirements that cover what msp imports, each
bounded below by a version the locks pin, and a wheel that works on its own in a fresh environment."""
import ast
import configparser
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from setuptools import find_packages

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIRST_PARTY = {"msp", "data_pipelines", "experiments", "benchmarks", "tests"}
# Import name → distribution name, where they differ (otherwise the same name, canonicalized).
DISTRIBUTION = {"absl": "absl-py", "ml_collections": "ml-collections", "orbax": "orbax-checkpoint",
                "tensorboardX": "tensorboardx", "PIL": "pillow", "array_record": "array-record",
                "tensorflow_datasets": "tensorflow-datasets", "yaml": "pyyaml"}
# Required without being imported: jax.export's deserialization needs flatbuffers, which jax does not require.
REQUIRED_UNIMPORTED = {"flatbuffers"}
# What each first-party folder may import beyond install_requires: the extras (by name) that provide it. The
# installed package imports them only inside the functions that need them (`import msp` must work without them);
# the repository's data layer and runs, which are not installed, need their extras anyway.
EXTRAS_OF = {"msp": ("torch",), "data_pipelines": ("data",), "experiments": ("data", "plotting")}
INSTALLED = {"msp"}
# Extras that no lock pins (the TensorBoard viewer: nothing in the repository runs it).
UNPINNED = {"tensorboard"}


def _setup_cfg() -> configparser.ConfigParser:
  config = configparser.ConfigParser(interpolation=None)
  config.read(ROOT / "setup.cfg", encoding="utf-8")
  return config


def _lines(value: str) -> list[str]:
  return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def _install_requires() -> list[Requirement]:
  return [Requirement(line) for line in _lines(_setup_cfg()["options"]["install_requires"])]


def _extras() -> dict[str, list[Requirement]]:
  section = _setup_cfg()["options.extras_require"]
  return {name: [Requirement(line) for line in _lines(section[name])] for name in section}


def _pinned() -> dict[str, Version]:
  """Distribution (canonical name) → the version requirements.lock or requirements-test.lock pins."""
  pins = {}
  for lock in ("requirements.lock", "requirements-test.lock"):
    for line in (ROOT / lock).read_text(encoding="utf-8").splitlines():
      name, sep, version = line.partition("==")
      if sep and not line.startswith("#"):
        pins[canonicalize_name(name.strip())] = Version(version.strip())
  return pins


def third_party_imports(path: pathlib.Path) -> dict[str, bool]:
  """Top-level third-party modules a file imports → whether every import of it is inside a function (lazy)."""
  found: dict[str, bool] = {}

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      names = []
      if isinstance(child, ast.Import):
        names = [alias.name for alias in child.names]
      elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
        names = [child.module]
      for name in names:
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
          found[top] = found.get(top, True) and in_function
      visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

  visit(ast.parse(path.read_text(encoding="utf-8")), False)
  return found


def uncovered_imports(folder: pathlib.Path, required: set[str], optional: set[str], lazily: bool) -> list[str]:
  """The imports under `folder` that neither `required` nor `optional` distributions provide (`lazily`: the
  optional ones only where imported inside a function)."""
  problems = []
  for path in sorted(folder.rglob("*.py")):
    for module, lazy in sorted(third_party_imports(path).items()):
      dist = canonicalize_name(DISTRIBUTION.get(module, module))
      if dist in required:
        continue
      if dist in optional and lazily and not lazy:
        problems.append(f"{path.relative_to(folder.parent)} imports {module} at module level, but {dist} is "
                        "only an extra: import it inside the function that needs it")
      elif dist not in optional:
        problems.append(f"{path.relative_to(folder.parent)} imports {module}: {dist} is not required")
  return problems


# ------------------------------------------------------------------------------------------------ requirements

@pytest.mark.parametrize("folder", sorted(EXTRAS_OF))
def test_the_requirements_cover_every_third_party_import(folder):
  """msp's imports are its install_requires (torch, lazily, the `torch` extra); the repository's data layer and
  runs, which are not installed, need the extras named for them on top."""
  extras = _extras()
  required = {canonicalize_name(r.name) for r in _install_requires()}
  optional = {canonicalize_name(r.name) for extra in EXTRAS_OF[folder] for r in extras[extra]}
  problems = uncovered_imports(ROOT / folder, required, optional, lazily=folder in INSTALLED)
  assert not problems, problems


def test_install_requires_is_exactly_what_msp_imports():
  """Nothing is force-installed that msp does not import (such as the data layer's tensorflow-datasets)."""
  extras = _extras()
  optional = {canonicalize_name(r.name) for extra in EXTRAS_OF["msp"] for r in extras[extra]}
  imported = {canonicalize_name(DISTRIBUTION.get(module, module))
              for path in (ROOT / "msp").rglob("*.py") for module in third_party_imports(path)} - optional
  required = {canonicalize_name(r.name) for r in _install_requires()}
  assert required == imported | REQUIRED_UNIMPORTED, (sorted(required - imported - REQUIRED_UNIMPORTED),
                                                      sorted(imported - required))


def test_the_import_check_sees_what_a_requirement_misses(tmp_path):
  folder = tmp_path / "pkg"
  folder.mkdir()
  (folder / "a.py").write_text("import os\nimport chex\nfrom msp import train\n\ndef f():\n  import torch\n")
  (folder / "b.py").write_text("import torch\n")
  assert third_party_imports(folder / "a.py") == {"chex": False, "torch": True}
  assert not uncovered_imports(folder, {"chex"}, {"torch"}, lazily=False)
  eager_torch = ("pkg/b.py imports torch at module level, but torch is only an extra: import it inside the "
                 "function that needs it")
  assert uncovered_imports(folder, {"chex"}, {"torch"}, lazily=True) == [eager_torch]
  assert uncovered_imports(folder, set(), {"torch"}, lazily=True) == ["pkg/a.py imports chex: chex is not required",
                                                                      eager_torch]


def test_every_requirement_has_a_lower_bound_the_locked_version_satisfies():
  pins = _pinned()
  requirements = [("install_requires", r) for r in _install_requires()] + [
      (extra, r) for extra, reqs in _extras().items() for r in reqs]
  problems = []
  for where, req in requirements:
    name = canonicalize_name(req.name)
    if not any(spec.operator in (">=", "~=", "==") for spec in req.specifier):
      problems.append(f"{where}: {req} has no lower bound")
    if name in pins:
      if not req.specifier.contains(pins[name], prereleases=True):
        problems.append(f"{where}: {req} excludes the locked {name}=={pins[name]}")
    elif where == "install_requires" or name not in UNPINNED:
      problems.append(f"{where}: {req} is pinned in no lock, so its bound is untested")
  assert not problems, problems


# ------------------------------------------------------------------------------------------------ packages

def installed_packages(root: pathlib.Path, config: configparser.ConfigParser) -> list[str]:
  """The packages setuptools installs for setup.cfg's `packages = find:` and its [options.packages.find]."""
  assert config["options"]["packages"].strip() == "find:"
  find = config["options.packages.find"] if config.has_section("options.packages.find") else {}
  return find_packages(where=str(root / find.get("where", ".")), include=_lines(find.get("include", "*")) or ("*",),
                       exclude=_lines(find.get("exclude", "")))


def test_only_msp_and_its_subpackages_are_installed():
  packages = installed_packages(ROOT, _setup_cfg())
  subpackages = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "msp").rglob("__init__.py"))
  assert sorted(packages) == subpackages, sorted(set(packages) ^ set(subpackages))
  assert "msp" in packages and not [p for p in packages if p.split(".")[0] != "msp"], packages


def test_the_package_check_sees_experiments_installed():
  """The include list setup.cfg had before (experiments and data_pipelines beside msp) fails the check."""
  config = configparser.ConfigParser(interpolation=None)
  config.read_string("[options]\npackages = find:\n[options.packages.find]\ninclude =\n    msp\n    msp.*\n"
                     "    data_pipelines\n    data_pipelines.*\n    experiments\n    experiments.*\n")
  assert {"experiments", "experiments.configs", "data_pipelines"} <= set(installed_packages(ROOT, config))


def test_the_versions_agree():
  """setup.cfg, msp.__version__ and CITATION.cff name one version."""
  init = (ROOT / "msp" / "__init__.py").read_text(encoding="utf-8")
  citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
  versions = {"setup.cfg": _setup_cfg()["metadata"]["version"].strip(),
              "msp.__version__": re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", init, re.M).group(1),
              "CITATION.cff": re.search(r"^version:\s*[\"']?([^\s\"']+)", citation, re.M).group(1)}
  assert len(set(versions.values())) == 1, versions


# ------------------------------------------------------------------------------------------------ the wheel

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
# Run in the fresh environment before the example: msp is the wheel's, and the repository's packages are absent.
CHECKS = """
import importlib.util, os, sys
import msp
venv = os.path.realpath(sys.argv[1])
assert os.path.realpath(msp.__file__).startswith(venv + os.sep), f"msp imported from {msp.__file__}, not the wheel"
for name in ("experiments", "data_pipelines"):
  spec = importlib.util.find_spec(name)
  assert spec is None, f"{name} is importable ({spec.origin}) where only the wheel is installed"
with open(sys.argv[2], encoding="utf-8") as f:
  example = f.read()
exec(compile(example, "README.md (the first python block)", "exec"), {"__name__": "__main__"})
print("example ran")
"""
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "runs", "workdir*", "tensorflow_datasets", "*.array_record*")


def _run(command, **kwargs) -> subprocess.CompletedProcess:
  result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
  assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
  return result


def install_wheel_and_run(tmp_path: pathlib.Path, example: str) -> str:
  """Builds the wheel from a copy of the checkout (the build writes build/ and *.egg-info beside its sources),
  installs it alone into a fresh venv whose dependencies come from this environment's site-packages, and runs
  the checks and then `example` there, outside the repository and without PYTHONPATH. Returns the output."""
  source, dist, venv = tmp_path / "source", tmp_path / "dist", tmp_path / "venv"
  # Without PYTHONPATH: where it holds the checkout, pip would take the checkout's egg-info (left by the editable
  # install) for the installed distribution and skip the wheel as "already satisfied".
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
  env.update(PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2")
  shutil.copytree(ROOT, source, ignore=COPY_IGNORE)
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
        "-w", str(dist), str(source)], env=env)
  wheels = list(dist.glob("*.whl"))
  version = _setup_cfg()["metadata"]["version"].strip()
  assert [w.name for w in wheels] == [f"meta_sparsity-{version}-py3-none-any.whl"], wheels
  with zipfile.ZipFile(wheels[0]) as wheel:
    names = wheel.namelist()
  dist_info = f"meta_sparsity-{version}.dist-info"
  assert {name.split("/")[0] for name in names} == {"msp", dist_info}, sorted({n.split("/")[0] for n in names})
  assert any(name.startswith(dist_info + "/") and name.endswith("/LICENSE") for name in names), names

  _run([sys.executable, "-m", "venv", str(venv)], env=env)
  _run([str(venv / "bin" / "pip"), "install", "--no-deps", "--no-index", "--quiet", str(wheels[0])], env=env)
  # Dependencies from this environment: its site-packages directories listed in a .pth of the fresh venv are
  # appended to sys.path, but the .pth files inside them are not processed, so neither this environment's
  # editable install of the checkout nor the Makefile's msp-repository.pth leaks in.
  purelib = _run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                 cwd=tmp_path, env=env).stdout.strip()
  shared = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
  pathlib.Path(purelib, "zz-shared-dependencies.pth").write_text("".join(f"{d}\n" for d in shared))

  (tmp_path / "example.py").write_text(example, encoding="utf-8")
  (tmp_path / "checks.py").write_text(CHECKS, encoding="utf-8")
  return _run([str(venv / "bin" / "python"), str(tmp_path / "checks.py"), str(venv), str(tmp_path / "example.py")],
              cwd=tmp_path, env=env).stdout


@pytest.mark.slow
def test_the_wheel_holds_only_msp_and_runs_the_readme_example_on_its_own(tmp_path):
  """The README's method-in-code example (its first python block) is what a user runs after `pip install`."""
  blocks = [body for lang, body in FENCE.findall((ROOT / "README.md").read_text(encoding="utf-8")) if lang == "python"]
  assert blocks, "README.md has no ```python block"
  assert "example ran" in install_wheel_and_run(tmp_path, blocks[0])
