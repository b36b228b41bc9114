"""msp's whole meta-step against the independent PyTorch implementation in benchmarks/vs_torch.py.

Same initial weights and episodes; float32 on both sides. The second step's loss checks the outer updates too
(SGD with momentum, Adam on ρ, ρ's clipping, the outer prox, BatchNorm running averages are not in the loss).
"""
import pytest

pytest.importorskip("torch")
from benchmarks.vs_torch import agreement  # pylint: disable=wrong-import-position


@pytest.mark.parametrize("mode,k", [("second_order", 1), ("first_order", 2)])
def test_meta_step_equals_an_independent_pytorch_implementation(mode, k):
  a = agreement(mode, k, image_size=8, episodes=2)
  assert a["loss"] == pytest.approx(a["torch_loss"], rel=1e-6)
  assert a["rho_error"] < 1e-4
  assert a["kernel_error"] < 1e-4
  assert a["second_loss"] == pytest.approx(a["torch_second_loss"], rel=1e-5)
  assert a["second_loss"] < a["loss"]  # the step moved the weights
