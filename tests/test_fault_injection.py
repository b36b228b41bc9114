"""Faults injected into real runs of the scripts: kill -9 at random moments (during steps and during asynchronous
saves), damaged or deleted checkpoint files, checkpoints that do not fit the config, NaN written into a checkpoint,
a full disk, a write that hangs, an export aimed at a run, bad input. After each, the workdir is either resumed to
exactly the uninterrupted run's state and logs, or refused in one line with its files unchanged."""
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.run.training import open_run
from tests import run_fixtures as rf

STEPS = 8
RUN = dict(steps=STEPS, checkpoint_every=1, keep_checkpoints=STEPS, log_every=1)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """(config, workdir) of the uninterrupted run, through the script; its last line says how many steps were
  skipped."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  out = subprocess.run(rf.meta_train_command(data_dir, workdir, **RUN), cwd=rf.ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": rf.ROOT}, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == (f"meta-trained {workdir} to step {STEPS}: 0 of {STEPS} steps "
                                                 f"skipped (a non-finite or outlying meta-gradient)")
  return rf.tiny_config(data_dir, **RUN), workdir


_PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")


def _messages(stderr: str) -> list[str]:
  """The lines of `stderr` but the progress bars (which tqdm redraws after carriage returns)."""
  return [part for part in re.split(r"[\r\n]", stderr) if part.strip() and not _PROGRESS_BAR.search(part)]


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=rf.ROOT, capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "PYTHONPATH": rf.ROOT})


def _one_line(out: subprocess.CompletedProcess, returncode: int = 2) -> str:
  """The one message line of a finished script, after checking its exit status."""
  messages = _messages(out.stderr)
  assert out.returncode == returncode and len(messages) == 1, (out.returncode, out.stderr[-3000:])
  return messages[0]


def _logged_lines(workdir: str) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  return sum(1 for _ in open(path, encoding="utf-8")) if os.path.exists(path) else 0


def _finish(command, workdir: str) -> None:
  out = subprocess.run(command, cwd=rf.ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": rf.ROOT},
                       timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]


def _assert_same_run(config, workdir: str, reference_dir: str) -> None:
  rf.assert_bitwise_equal(rf.state_leaves(config, workdir), rf.state_leaves(config, reference_dir))
  assert rf.jsonl_steps(workdir) == list(range(1, STEPS + 1))
  assert rf.tensorboard_scalars(workdir, "loss") == rf.tensorboard_scalars(reference_dir, "loss")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_random_moments_then_resume_equals_the_uninterrupted_run(reference, tmp_path, seed):
  config, reference_dir = reference
  rng = random.Random(seed)
  workdir = str(tmp_path / "run")
  command = rf.meta_train_command(config.data.data_dir, workdir, **RUN)
  kills = []
  for _ in range(2):  # killed twice, each time after a random number of logged steps and a random delay
    process = rf.start(command)
    target = _logged_lines(workdir) + rng.randint(1, 3)
    while _logged_lines(workdir) < target and process.poll() is None:
      time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.2))  # saves run in the background: this lands inside one about half the time
    process.kill()
    process.wait()
    kills.append(_logged_lines(workdir))
  _finish(command, workdir)
  _assert_same_run(config, workdir, reference_dir)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_random_file_of_the_newest_checkpoint_truncated_or_deleted(reference, tmp_path, seed):
  config, reference_dir = reference
  rng = random.Random(seed)
  workdir = rf.copy_run(reference_dir, str(tmp_path / "run"))
  newest = os.path.join(workdir, "checkpoints", str(STEPS))
  files = sorted(os.path.join(d, f) for d, _, fs in os.walk(newest) for f in fs)
  for path in rng.sample(files, 2):
    if rng.random() < 0.5:
      os.remove(path)
    else:
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  out = _script(*rf.meta_train_command(config.data.data_dir, workdir, **RUN)[1:])
  messages = _messages(out.stderr)  # orbax's own reports of a damaged file (thousands of lines) are dropped
  assert out.returncode == 0 and len(messages) <= 1, out.stderr[-3000:]
  if os.path.exists(os.path.join(workdir, "checkpoints", f"{STEPS}.corrupt")):  # else the files were not needed
    assert re.search(rf"checkpoints/{STEPS} is corrupt: .*; set it aside as {STEPS}.corrupt and resumed from step "
                     rf"{STEPS - 1}$", messages[0]), messages
  _assert_same_run(config, workdir, reference_dir)


def _poison_newest(config, workdir: str) -> int:
  """Overwrites the newest checkpoint's parameters with NaN (as a diverged run that saved would have); its step."""
  run = open_run(config, workdir)
  try:
    step = run.checkpointer.latest_step()
    state, data_state = run.checkpointer.restore(run.fresh_state(), step)
    nan = state.replace(params=jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), state.params))
    path = run.checkpointer.directory / str(step)
    os.system(f"rm -r {path}")
    run.checkpointer._checkpointer.reload()  # pylint: disable=protected-access
    run.checkpointer.save(step, nan, data_state, force=True)
  finally:
    run.close()
  return step


@pytest.mark.slow
def test_nan_in_a_checkpoint_is_refused_by_every_command_in_one_line(reference, tmp_path):
  config, reference_dir = reference
  workdir = rf.copy_run(reference_dir, str(tmp_path / "run"))
  step = _poison_newest(config, workdir)
  env = {**os.environ, "PYTHONPATH": rf.ROOT}
  for script, extra in (("evaluate", []), ("export", [f"--out={tmp_path / 'export'}"])):
    before = rf.snapshot(workdir)
    out = subprocess.run([os.sys.executable, f"experiments/{script}.py", f"--workdir={workdir}", *extra],
                         cwd=rf.ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    assert f"checkpoints/{step} holds NaN or inf in its parameters" in out.stderr
    assert rf.snapshot(workdir) == before and not (tmp_path / "export").exists()
  out = subprocess.run(rf.meta_train_command(config.data.data_dir, workdir, **{**RUN, "steps": STEPS + 2}),
                       cwd=rf.ROOT, capture_output=True, text=True, env=env, timeout=900)
  assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(
      f"error: step {STEPS + 1}: the parameters"), out.stderr[-2000:]
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())[-1] == STEPS


def _with_file_size_limit(command: list[str], kilobytes: int) -> list[str]:
  """`command` run with files capped at `kilobytes` KiB: writes past the cap fail with EFBIG, as on a full disk
  (SIGXFSZ ignored, which stays so across exec)."""
  return ["bash", "-c", f"ulimit -f {kilobytes}; trap '' XFSZ; exec \"$@\"", "bash", *command]


@pytest.mark.slow
def test_a_full_disk_ends_the_run_in_one_line_and_it_resumes_once_there_is_room(reference, tmp_path):
  config, reference_dir = reference
  workdir = str(tmp_path / "run")
  command = rf.meta_train_command(config.data.data_dir, workdir, **RUN)
  process = rf.start(_with_file_size_limit(command, 20))
  _, stderr = process.communicate(timeout=900)
  messages = _messages(stderr)
  assert process.returncode == 2 and len(messages) == 1, stderr[-3000:]
  assert messages[0].startswith(f"error: cannot write a checkpoint in {workdir}/checkpoints: File too large")
  _finish(command, workdir)
  _assert_same_run(config, workdir, reference_dir)


@pytest.mark.slow
def test_evaluating_a_damaged_checkpoint_prints_one_line_every_time(reference, tmp_path):
  """orbax keeps reading in background threads after the error; their tracebacks at interpreter shutdown used to
  follow the line in about one run of four."""
  config, reference_dir = reference
  workdir = rf.copy_run(reference_dir, str(tmp_path / "run"))
  with open(os.path.join(workdir, "checkpoints", str(STEPS), "state", "manifest.ocdbt"), "wb") as f:
    f.write(b"garbage" * 10)
  for _ in range(4):
    out = subprocess.run([os.sys.executable, "experiments/evaluate.py", f"--workdir={workdir}"], cwd=rf.ROOT,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": rf.ROOT}, timeout=900)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-2000:]
    assert f"checkpoints/{STEPS} is corrupt: " in out.stderr


@contextlib.contextmanager
def _small_disk(path, kilobytes: int):
  """A tmpfs of `kilobytes` KiB mounted at `path` (created) for the block; pytest.skip where mounting is not
  allowed (the file-size-limit test above covers a full disk there)."""
  path.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(path)],
                           capture_output=True, check=False).returncode == 0
  if not mounted:
    pytest.skip("cannot mount a tmpfs here")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("kilobytes,saved", [(100, 0), (400, 1)])  # saved: the least number of steps committed
def test_a_full_disk_at_or_after_the_first_checkpoint_ends_the_run_in_one_line_within_seconds(
    reference, tmp_path, kilobytes, saved):
  """A full disk used to hang the run for good (the TensorBoard writer's thread died, the loop blocked on its
  queue) or to print hundreds of lines of orbax tracebacks; the run now ends at once, and resumes once there is
  room."""
  config, reference_dir = reference
  with _small_disk(tmp_path / "disk", kilobytes) as disk:
    workdir = str(disk / "run")
    began = time.monotonic()
    out = _script(*rf.meta_train_command(config.data.data_dir, workdir, **RUN)[1:], timeout=300)
    line = _one_line(out)
    assert time.monotonic() - began < 120
    assert line.startswith(f"error: cannot write ") and workdir in line and "No space left on device" in line, line
    committed = [s for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
    assert len(committed) >= saved and (saved or not committed), committed
    moved = rf.copy_run(workdir, str(tmp_path / "run"))
  _finish(rf.meta_train_command(config.data.data_dir, moved, **RUN), moved)
  _assert_same_run(config, moved, reference_dir)


_STUCK_SAVE = """
import sys, threading
import experiments.run.training as train
from experiments.run import script
from msp.train.checkpoint import RunCheckpointer
from tests import run_fixtures as rf
save = RunCheckpointer.save

def stuck_save(self, step, *args, **kwargs):
  if step == 3:
    print("stuck", flush=True)
    threading.Event().wait()  # a write that never returns (a hung network mount)
  return save(self, step, *args, **kwargs)

RunCheckpointer.save = stuck_save
train.STOP_GRACE_S = 3.0
script.start(["stuck_save"])
train.train(rf.tiny_config(sys.argv[1], steps=8, checkpoint_every=1), sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_sigterm_ends_a_run_whose_write_hangs_after_the_grace_period_in_one_line(reference, tmp_path):
  config, _ = reference
  workdir = str(tmp_path / "run")
  process = rf.start([sys.executable, "-c", _STUCK_SAVE, config.data.data_dir, workdir])
  assert process.stdout.readline() == "stuck\n", process.stderr.read()[-3000:]
  process.send_signal(signal.SIGTERM)
  began = time.monotonic()
  _, stderr = process.communicate(timeout=120)
  assert time.monotonic() - began < 30
  messages = _messages(stderr)
  assert process.returncode == 128 + signal.SIGTERM and len(messages) == 1, stderr[-3000:]
  assert messages[0].startswith("error: stopped by SIGTERM: the step in progress could not be finished and saved "
                                "within 3 s (a write is stuck)"), messages
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()) == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("out", ["RUN", "PARENT", "RUN/checkpoints", "RUN/tensorboard"])
def test_export_at_above_or_inside_a_run_is_refused_with_overwrite_and_deletes_nothing(reference, tmp_path, out):
  _, reference_dir = reference
  workdir = rf.copy_run(reference_dir, str(tmp_path / "parent" / "run"))
  before = rf.snapshot(str(tmp_path))
  target = out.replace("RUN", workdir).replace("PARENT", str(tmp_path / "parent"))
  line = _one_line(_script("experiments/export.py", f"--workdir={workdir}", f"--out={target}", "--overwrite"))
  assert line.startswith(f"error: --out={target!r} ") and ("holds the run" in line or "inside the run" in line), line
  assert rf.snapshot(str(tmp_path)) == before


@pytest.mark.slow
def test_a_hand_edited_config_is_refused_with_the_leaves_that_differ_and_nothing_is_set_aside(reference, tmp_path):
  config, reference_dir = reference
  workdir = rf.copy_run(reference_dir, str(tmp_path / "run"))
  path = os.path.join(workdir, "config.json")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert '"head_width": 8' in text
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.replace('"head_width": 8', '"head_width": 16'))
  before = rf.snapshot(workdir)
  command = rf.meta_train_command(config.data.data_dir, workdir, **{**RUN, "steps": STEPS + 3, "model.head_width": 16})
  line = _one_line(_script(*command[1:]))
  assert f"checkpoints/{STEPS} does not fit this run's state" in line and "leaves differ: params/" in line, line
  assert rf.snapshot(workdir) == before


@pytest.mark.slow
def test_a_run_none_of_whose_checkpoints_reads_back_stops_instead_of_starting_again(reference, tmp_path):
  config, reference_dir = reference
  workdir = rf.copy_run(reference_dir, str(tmp_path / "run"))
  for step in range(1, STEPS + 1):
    data = os.path.join(workdir, "checkpoints", str(step), "state", "ocdbt.process_0", "d")
    for name in os.listdir(data):
      os.truncate(os.path.join(data, name), 10)
  before = rf.snapshot(workdir)
  line = _one_line(_script(*rf.meta_train_command(config.data.data_dir, workdir, **{**RUN, "steps": STEPS + 2})[1:]))
  assert line.startswith(f"error: none of the checkpoints in {workdir}/checkpoints can be read") and "move" in line
  assert rf.snapshot(workdir) == before


@pytest.mark.slow
def test_a_run_that_skips_most_steps_stops_in_one_line(reference, tmp_path):
  config, _ = reference
  workdir = str(tmp_path / "run")
  out = _script(*rf.meta_train_command(config.data.data_dir, workdir, **{"optim.lr": 1e6, "steps": 20})[1:])
  assert re.fullmatch(r"error: step (\d+): (\d+) of the last \1 steps were skipped \(.*\), more than "
                      r"safeguards.max_skipped_fraction=0.5, so the run stopped before saving it; .*", _one_line(out))


_BAD_CONFIG = "def get_config():\n  return {'steps': 1,\n"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["num_classes", "syntax_error", "max_examples", "adapt_tasks",
                                  "adapt_tasks_with_config", "data_dir_file"])
def test_bad_input_ends_in_one_line_and_writes_nothing(reference, tmp_path, case):
  config, reference_dir = reference
  workdir = rf.copy_run(reference_dir, str(tmp_path / "run"))
  (tmp_path / "bad_config.py").write_text(_BAD_CONFIG)
  (tmp_path / "a_file").write_text("")
  (tmp_path / "download").mkdir()
  data = f"--config.data.data_dir={config.data.data_dir}"
  commands = {
      "num_classes": ([*rf.meta_train_command(config.data.data_dir, str(tmp_path / "new"))[1:],
                       "--config.tasks.segmentation.num_classes=7"],
                      "error: config.tasks.segmentation.num_classes=7 but synthetic_scenes/"),
      "syntax_error": (["experiments/meta_train.py", f"--config={tmp_path / 'bad_config.py'}",
                        f"--workdir={tmp_path / 'new'}"],
                       f"error: --config={tmp_path / 'bad_config.py'}: line 2: SyntaxError: "),
      "max_examples": (["experiments/evaluate.py", f"--workdir={workdir}", "--config.eval.max_examples=0"],
                       "error: config.eval.max_examples=0 must be an integer ≥ 1"),
      "adapt_tasks": (["experiments/adapt_unseen.py", f"--workdir={workdir}", "--config.adapt.tasks=('bogus',)"],
                      "error: config.adapt.tasks names 'bogus', which config.tasks does not define"),
      "adapt_tasks_with_config": (["experiments/adapt_unseen.py", f"--workdir={workdir}", f"--config={rf.CONFIG}",
                                   data, *(f"--config.{k}={v}" for k, v in RUN.items()),
                                   "--config.adapt.tasks=('bogus',)"],
                                  "error: config.adapt.tasks names 'bogus', which config.tasks does not define"),
      "data_dir_file": (["-m", "data_pipelines.nyuv2", f"--data_dir={tmp_path / 'a_file'}",
                         f"--manual_dir={tmp_path / 'download'}"],
                        f"error: the data directory {tmp_path / 'a_file'} is not a directory"),
  }
  command, expected = commands[case]
  before = rf.snapshot(str(tmp_path))
  line = _one_line(_script(*command))
  assert line.startswith(expected), line
  assert rf.snapshot(str(tmp_path)) == before and not (tmp_path / "new").exists()
