"""The README and docs/ say what the code does: their Python runs, their shown output is what the command prints,
their links resolve inside the repository, and no tracked file points at material outside it."""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PAPER_SCALE = os.path.join(ROOT, "docs", "paper_scale.md")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
# Inline links and images, [text](target "title") / ![alt](target); HTML src= and href= attributes.
MARKDOWN_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
EXTERNAL = re.compile(r"^(https?:|mailto:)")


def _read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _fenced_blocks(text: str, language: str) -> list[str]:
  return [body for lang, body in FENCE.findall(text) if lang == language]


def _git_files() -> list[str] | None:
  """The tracked files (paths relative to the root, '/'-separated), or None outside a git checkout."""
  try:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return None
  return [name for name in out.decode("utf-8", "surrogateescape").split("\0") if name]


def _tracked_files() -> list[str]:
  files = _git_files()
  if files is None:
    pytest.skip("not a git checkout: the tracked files are unknown")
  return files


def _markdown_files() -> list[str]:
  """README.md and every Markdown file under docs/ (tracked ones; every one outside a git checkout)."""
  files = _git_files()
  if files is None:
    files = [os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
             for d, _, names in os.walk(os.path.join(ROOT, "docs")) for f in names]
  return ["README.md", *sorted(name for name in files if name.startswith("docs/") and name.endswith(".md"))]


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
  return env


# ------------------------------------------------------------------------------------------------ Python blocks

PYTHON_BLOCKS = _fenced_blocks(_read(README), "python")
SHOWN_OUTPUT = re.compile(r"^```python\n(.*?)^```\n\nprints\n\n```\n(.*?)^```", re.M | re.S)


def _python_blocks(name: str) -> list[tuple[str, int, str, str | None]]:
  """(page, index, code, the output the page shows after "prints", or None) of each ```python block of a page."""
  text = _read(os.path.join(ROOT, name))
  shown = dict(SHOWN_OUTPUT.findall(text))
  return [(name, i, code, shown.get(code)) for i, code in enumerate(_fenced_blocks(text, "python"))]


ALL_PYTHON_BLOCKS = [block for name in _markdown_files() for block in _python_blocks(name)]


def test_the_readme_has_python_blocks():
  assert PYTHON_BLOCKS, "README.md has no ```python block (the method-in-code example is expected)"


@pytest.mark.parametrize("name, index, code, shown", ALL_PYTHON_BLOCKS,
                         ids=[f"{n}:{i}" for n, i, _, _ in ALL_PYTHON_BLOCKS])
def test_python_blocks_run(name, index, code, shown):
  """Each block of the README and of docs/ runs on its own in a fresh interpreter from the repository root (nothing
  defined elsewhere) and prints what the page shows after it ("prints"), where it shows something."""
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, f"{name} python block {index} failed:\n{result.stderr[-4000:]}"
  assert shown is None or result.stdout == shown, f"{name} python block {index} printed:\n{result.stdout}"


# ------------------------------------------------------------------------------------------------ shown output

def test_readme_summary_output_is_what_the_command_prints():
  """The paper-scale summary in docs/paper_scale.md: the shown command, run, prints exactly the lines shown below
  it."""
  shown = [body for body in _fenced_blocks(_read(PAPER_SCALE), "")
           if body.startswith("$ python experiments/reports/network_summary.py ")]
  assert len(shown) == 1, "docs/paper_scale.md should show one `$ python experiments/reports/network_summary.py ...` block"
  command, _, expected = shown[0].partition("\n")
  args = shlex.split(command[2:])
  assert args[:2] == ["python", "experiments/reports/network_summary.py"]
  result = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  printed = [line.rstrip() for line in result.stdout.strip("\n").split("\n")]
  assert [line.rstrip() for line in expected.strip("\n").split("\n")] == printed


# ------------------------------------------------------------------------------------------------ links

def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
  text = FENCE.sub("", text)
  slugs, seen = set(), {}
  for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
    slug = _slug(heading)
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    slugs.add(slug if count == 0 else f"{slug}-{count}")
  return slugs


def _links(text: str) -> list[str]:
  """Link and image targets outside fenced blocks and inline code."""
  prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
  return MARKDOWN_LINK.findall(prose) + HTML_LINK.findall(prose)


@pytest.mark.parametrize("name", _markdown_files())
def test_links_and_images_resolve_inside_the_repository(name):
  """Every relative link or image points to a tracked file (or folder) of the repository, anchors to a heading;
  nothing but public http(s) addresses points outside it."""
  tracked = set(_tracked_files())
  folders = {os.path.dirname(path) for path in tracked}
  folders |= {os.path.dirname(folder) for folder in list(folders)}
  source = os.path.join(ROOT, name)
  text = _read(source)
  problems = []
  for target in _links(text):
    if EXTERNAL.match(target):
      continue
    path, _, anchor = target.partition("#")
    if re.match(r"^[a-z][a-z0-9+.-]*:", path):
      problems.append(f"{target}: only http(s) and mailto addresses may leave the repository")
      continue
    resolved = os.path.normpath(os.path.join(os.path.dirname(source), path)) if path else source
    relative = os.path.relpath(resolved, ROOT).replace(os.sep, "/")
    if relative.startswith("../") or relative == "..":
      problems.append(f"{target}: leaves the repository")
    elif relative not in tracked and relative.rstrip("/") not in folders:
      problems.append(f"{target}: {relative} is not a file of the repository")
    elif anchor and relative.endswith(".md") and anchor not in _anchors(_read(resolved)):
      problems.append(f"{target}: {relative} has no heading with anchor #{anchor}")
  assert not problems, f"{name}:\n" + "\n".join(problems)


def test_the_readme_links_its_docs_pages():
  """Each docs page is reachable from the README."""
  targets = {target.partition("#")[0] for target in _links(_read(README))}
  pages = [name for name in _markdown_files() if name.startswith("docs/") and name.count("/") == 1]
  assert pages and not [page for page in pages if page not in targets], targets


# ------------------------------------------------------------------------------------------------ self-contained

def test_no_tracked_file_refers_to_material_outside_the_repository():
  """The project stands alone: no tracked file names the private notes it was built from."""
  needles = [("PAPER" + ".md").encode(), (".." + "/shared").encode()]
  offenders = []
  for name in _tracked_files():
    path = os.path.join(ROOT, name)
    if not os.path.isfile(path):
      continue
    with open(path, "rb") as f:
      data = f.read()
    offenders += [f"{name}: {needle.decode()}" for needle in needles if needle in data]
  assert not offenders, offenders
