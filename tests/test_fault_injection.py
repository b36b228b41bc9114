"""Faults injected into real runs of meta_train.py: kill -9 at random moments (during steps and during asynchronous
saves), damaged or deleted checkpoint files, NaN written into a checkpoint, and a full disk. After each, the
workdir is either resumed to exactly the uninterrupted run's state and logs, or refused in one line."""
import os
import random
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.train import open_run
from tests import run_fixtures as rf

STEPS = 8
RUN = dict(steps=STEPS, checkpoint_every=1, keep_checkpoints=STEPS, log_every=1)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """(config, workdir) of the uninterrupted run, through the script."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  out = subprocess.run(rf.meta_train_command(data_dir, workdir, **RUN), cwd=rf.ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": rf.ROOT}, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return rf.tiny_config(data_dir, **RUN), workdir


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
  _finish(rf.meta_train_command(config.data.data_dir, workdir, **RUN), workdir)
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
  last = stderr.strip().splitlines()[-1]
  # orbax logs the failed background write with its traceback; what msp prints is the last line
  assert process.returncode == 2 and last.startswith("error: cannot write") and "File too large" in last, last
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
    assert f"checkpoints/{STEPS} is corrupt or incomplete" in out.stderr
