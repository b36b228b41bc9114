"""The paper-scale network's meta-step compiles (from shapes alone, batch 1): the authors' dilated ResNet-50 with
ASPP heads (NYU-v2) and with conv + pooled-MLP attribute heads (CelebAMask-HQ). ~3 minutes each on 2 CPU cores."""
import pytest

from experiments.configs import celebamask_hq, nyuv2
from msp.train import build_meta_learner


@pytest.mark.slow
@pytest.mark.parametrize("get_config", [nyuv2.get_config, celebamask_hq.get_config])
def test_paper_meta_step_compiles_at_batch_one(get_config):
  config = get_config("budget,paper")
  config.meta.episodes = config.meta.support_size = config.meta.query_size = 1
  learner = build_meta_learner(config)
  compiled = learner.train_step.lower(*learner.abstract_inputs()).compile()
  assert compiled.memory_analysis().argument_size_in_bytes > 4 * 23_578_304  # the backbone's float32 kernels
