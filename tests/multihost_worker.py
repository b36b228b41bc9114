"""One process of the two-process test in test_multihost.py: `python tests/multihost_worker.py PROCESS_ID PORT
DATA_DIR OUT`. Meta-trains the tiny synthetic config for 2 steps on this process's data shard and (process 0)
writes the final parameters to OUT (npz)."""
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main(process_id: int, port: int, data_dir: str, out: str):
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from experiments.configs import synthetic  # pylint: disable=import-outside-toplevel
  from msp.train.loop import meta_train  # pylint: disable=import-outside-toplevel
  from experiments.run.training import meta_batches  # pylint: disable=import-outside-toplevel
  from msp.train.setup import build_meta_learner  # pylint: disable=import-outside-toplevel
  from data_pipelines.datasets import open_dataset  # pylint: disable=import-outside-toplevel

  config = synthetic.get_config("budget,tiny")
  config.data.data_dir = data_dir
  config.steps = 2
  learner = build_meta_learner(config)
  batches = meta_batches(config, open_dataset(config.data, config.image_size), 0)
  state, history = meta_train(learner, learner.init_state(jax.random.key(config.seed)), batches, config.steps,
                              log_every=1, progress=False)
  if process_id == 0:
    flat = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
    np.savez(out, **flat, loss=np.stack([r["loss"] for r in history]))


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
