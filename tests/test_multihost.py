"""Two processes (JAX multi-process on CPU, gloo collectives) meta-train on their own data shards; the result equals
one process meta-training on the concatenation of both shards' meta-batches."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from data_pipelines.datasets import open_dataset
from data_pipelines.episodes import MetaBatchSampler
from experiments.configs import synthetic
from msp.parallel import shard_episodes
from msp.train.setup import build_meta_learner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_concatenated_meta_batch(tmp_path):
  config = synthetic.get_config("budget,tiny")
  config.data.data_dir = str(tmp_path / "tfds")
  dataset = open_dataset(config.data, config.image_size)  # built once, before the workers read it
  out, port = str(tmp_path / "params.npz"), _free_port()
  env = {**os.environ, "PYTHONPATH": ROOT}
  workers = [subprocess.Popen([sys.executable, "tests/multihost_worker.py", str(p), str(port), config.data.data_dir,
                               out], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p in (0, 1)]
  logs = [w.communicate(timeout=600)[0] for w in workers]
  assert all(w.returncode == 0 for w in workers), "\n".join(log[-3000:] for log in logs)

  learner = build_meta_learner(config)
  state = learner.init_state(jax.random.key(config.seed))
  m = config.meta
  samplers = [MetaBatchSampler(dataset.source(config.data.train_split), dataset.targets(config.tasks,
                                                                                          config.seen_tasks),
                               m.episodes, m.support_size, m.query_size, seed=config.seed,
                               task_sampling=m.task_sampling, process_index=p, process_count=2) for p in (0, 1)]
  losses = []
  for step in range(2):
    both = jax.tree.map(lambda *parts: np.concatenate(parts), *(s(step) for s in samplers))
    state, metrics = learner.train_step(state, shard_episodes(both, learner.mesh))
    losses.append(float(metrics["loss"]))
  got = np.load(out)
  np.testing.assert_allclose(got["loss"], losses, rtol=1e-5)
  for path, value in traverse_util.flatten_dict(jax.device_get(state.params), sep="/").items():
    np.testing.assert_allclose(got[path], value, rtol=1e-4, atol=1e-6, err_msg=path)
