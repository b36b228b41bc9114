"""The scripts as a job of several processes on this machine (JAX's distributed runtime on CPU: a localhost
coordinator, gloo collectives): meta-training on 2 and 4 processes ends where one process ends, the job's files are
written once, evaluation and adaptation on several processes report what one process reports, and a job that lost a
process stops and resumes with the same command."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import traverse_util

from experiments.run.training import trained_network
from msp.parallel import processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny synthetic config with 4 episodes, so that 1, 2 and 4 processes share them.
CONFIG = ["--config=experiments/configs/synthetic.py:budget,tiny", "--config.meta.episodes=4"]
STEPS = 10


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _environment(**extra) -> dict:
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", **extra}
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "XLA_FLAGS"):
    if name not in extra:
      env.pop(name, None)
  return env


def _start(count: int, script: str, *args: str) -> list[subprocess.Popen]:
  """`count` processes of one job running `script` with `args`, as a cluster would start them."""
  address = f"localhost:{_free_port()}"
  return [subprocess.Popen([sys.executable, script, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=_environment(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES=str(count),
                                                       JAX_PROCESS_ID=str(p)))
          for p in range(count)]


def _job(count: int, script: str, *args: str) -> list[tuple[str, str]]:
  """Runs a job of `count` processes to the end; (stdout, stderr) of each, after checking that each succeeded.
  gloo's own connection notes are left out of stdout."""
  workers = _start(count, script, *args)
  outputs = [w.communicate(timeout=900) for w in workers]
  for p, (w, (out, err)) in enumerate(zip(workers, outputs)):
    assert w.returncode == 0, f"process {p}: {err[-3000:]}"
  return [("".join(line for line in out.splitlines(keepends=True) if not line.startswith("[Gloo]")), err)
          for out, err in outputs]


def _single(script: str, *args: str, devices: int = 1) -> tuple[str, str]:
  flags = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"} if devices > 1 else {}
  done = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                        env=_environment(**flags))
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout, done.stderr


def _params(workdir: str) -> dict[str, np.ndarray]:
  step, state = trained_network(workdir)
  assert step == STEPS
  return traverse_util.flatten_dict(jax.device_get({"params": state.params, "log_lambdas": state.log_lambdas}),
                                    sep="/")


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """Workdirs of the same run trained by 1 process (on 1 and on 2 devices), 2 processes and 4 processes."""
  root = tmp_path_factory.mktemp("multihost")
  common = [*CONFIG, f"--config.data.data_dir={data_dir}", f"--config.steps={STEPS}"]
  dirs = {name: str(root / name) for name in ("one", "one_on_2_devices", "two", "four")}
  _single("experiments/meta_train.py", *common, f"--workdir={dirs['one']}")  # builds the dataset
  _single("experiments/meta_train.py", *common, f"--workdir={dirs['one_on_2_devices']}", devices=2)
  logs = {count: _job(count, "experiments/meta_train.py", *common, f"--workdir={dirs[name]}")
          for count, name in ((2, "two"), (4, "four"))}
  return dirs, logs, common


@pytest.mark.slow
def test_two_and_four_processes_end_with_the_one_process_checkpoint(runs):
  dirs, _, _ = runs
  one = _params(dirs["one"])
  # 2 processes of one device each compute exactly what one process on 2 devices computes ...
  for path, value in _params(dirs["one_on_2_devices"]).items():
    np.testing.assert_array_equal(_params(dirs["two"])[path], value, err_msg=path)
  # ... and differ from one device only by the order of the float32 sums over episodes
  for name in ("two", "four"):
    for path, value in _params(dirs[name]).items():
      scale = np.max(np.abs(one[path])) + 1e-30
      assert np.max(np.abs(value - one[path])) <= 1e-5 * scale, (name, path)


@pytest.mark.slow
def test_the_job_writes_its_files_once_and_each_process_names_itself(runs):
  dirs, logs, _ = runs
  for count, name in ((2, "two"), (4, "four")):
    records = [json.loads(line) for line in open(os.path.join(dirs[name], "metrics.jsonl"), encoding="utf-8")]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert len(os.listdir(os.path.join(dirs[name], "tensorboard"))) == 1
    assert sorted(os.listdir(os.path.join(dirs[name], "checkpoints"))) == ["10", "6", "8"]
    for p, (out, err) in enumerate(logs[count]):
      assert f"process {p} of {count}: 1 local cpu device(s) (cpu), {count} in the job" in err
      assert f"meta-trained {dirs[name]} to step {STEPS}" in out
    assert "meta-train:" in logs[count][0][1] and all("meta-train:" not in err for _, err in logs[count][1:])


def _results(path: str) -> dict:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("script, results", [("experiments/evaluate.py", "eval/test_step10.json"),
                                             ("experiments/adapt_unseen.py", "adapt/heads_step10.json")])
def test_two_processes_report_the_whole_split_as_one_process_does(runs, script, results):
  dirs, _, _ = runs
  workdir = dirs["two"]
  single_out, _ = _single(script, f"--workdir={workdir}")
  single = _results(os.path.join(workdir, results))
  os.remove(os.path.join(workdir, results))
  logs = _job(2, script, f"--workdir={workdir}")
  job = _results(os.path.join(workdir, results))
  tables = [out for out, _ in logs]
  assert tables[0] == tables[1] == single_out  # every host prints the whole split's table, as one process does
  flat = lambda record: traverse_util.flatten_dict({k: v for k, v in record.items() if k in ("results", "unseen",
                                                                                             "seen")}, sep="/")
  assert flat(single).keys() == flat(job).keys() and flat(single)
  for key, value in flat(single).items():  # per-process partial sums: float rounding at most
    assert flat(job)[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.slow
def test_prune_finetune_and_export_run_as_two_process_jobs(runs, tmp_path):
  dirs, _, _ = runs
  pruned, export = str(tmp_path / "pruned"), str(tmp_path / "export")
  _job(2, "experiments/prune.py", f"--from={dirs['two']}", f"--workdir={pruned}")
  assert sorted(os.listdir(os.path.join(pruned, "checkpoints"))) == [str(STEPS)]
  _job(2, "experiments/finetune.py", f"--workdir={pruned}")
  records = [json.loads(line) for line in open(os.path.join(pruned, "finetuned", "metrics.jsonl"), encoding="utf-8")]
  assert records and len({r["step"] for r in records if "loss" in r}) == len([r for r in records if "loss" in r])
  logs = _job(2, "experiments/export.py", f"--workdir={pruned}", f"--out={export}", "--repeats=2")
  assert all(f"to {export}" in out for out, _ in logs)
  assert sorted(os.listdir(export)) == ["checkpoint", "inference.jax_exported", "report.json", "report.md",
                                        "spec.json"]
  report = _results(os.path.join(export, "report.json"))
  assert report["max_abs_difference"] and max(report["exported_max_abs_difference"].values()) <= 1e-5


@pytest.mark.slow
def test_a_job_that_loses_a_process_stops_and_the_same_command_resumes_it(runs, tmp_path):
  dirs, _, common = runs
  workdir = str(tmp_path / "killed")
  args = ["experiments/meta_train.py", *common, f"--workdir={workdir}"]
  workers = _start(2, *args)
  while not os.path.isdir(os.path.join(workdir, "checkpoints", "2")):
    assert all(w.poll() is None for w in workers), "the job ended before its first checkpoint"
    time.sleep(0.05)
  workers[1].send_signal(signal.SIGKILL)
  workers[0].communicate(timeout=300)  # JAX's coordination service ends it once the heartbeats stop
  assert workers[0].returncode != 0
  assert os.listdir(os.path.join(workdir, "checkpoints"))
  _job(2, *args)
  for path, value in _params(dirs["two"]).items():
    np.testing.assert_array_equal(_params(workdir)[path], value, err_msg=path)
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  assert [r["step"] for r in records] == list(range(1, STEPS + 1))


def test_the_runtime_starts_where_the_environment_names_a_job_of_several_processes():
  assert not processes.wanted("auto", {})
  assert processes.wanted("auto", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
  assert processes.wanted("auto", {"SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4"})
  assert not processes.wanted("auto", {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"})  # one task: e.g. an array job
  assert processes.wanted("on", {}) and not processes.wanted("off", {"JAX_COORDINATOR_ADDRESS": "h:1"})
  with pytest.raises(ValueError, match="--distributed='yes'"):
    processes.wanted("yes", {})


def test_one_process_sums_and_copies_nothing_away():
  tree = {"count": np.array([1, 2], np.int32), "sum": np.float32(0.5)}
  summed = processes.sum_over_processes(tree)
  assert summed["count"].dtype == np.int64 and summed["sum"].dtype == np.float64
  np.testing.assert_array_equal(summed["count"], [1, 2])
  array = jax.numpy.ones(3)
  assert processes.local(array) is array and processes.any_process(True) and not processes.any_process(False)
