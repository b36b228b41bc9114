"""Latency of physically pruned paper-scale backbones against the ideal set by their FLOP ratio.

python benchmarks/export_speed.py [--sparsities=0.3,0.5,0.7] [--patterns=independent,shared] [--multiple_of=8]
                                  [--batch_sizes=1,8] [--repeats=5] [--image_size=256]

The backbone is the authors' dilated ResNet-50 (docs/method.md §13, `msp.models.presets`): deep stem 3→64→64→128
+ max-pool, bottleneck stages [3, 4, 6, 3] of widths 64/128/256/512 (×4 out), strides (1, 2, 1, 1), dilations
(1, 1, 2, 4): output stride 8.
For each pattern and group sparsity p, a fraction p of every conv's output groups is zeroed at random and the
network is pruned with msp/export (heads are left out: the backbone is what sparsity acts on):
  independent  every conv draws its own dead channels, so a residual-stream channel survives unless it is dead
               in all the stream's producers (what per-conv group lasso gives) and the streams barely shrink;
  shared       the producers of one channel space (a residual stream) share their dead channels, so streams
               shrink by p too.
Prints a markdown table (the machine named) of FLOPs and parameters kept, the median latency of the jit-compiled
inference forward at each batch size (all networks timed round-robin), the speedup over the dense network and
that speedup ÷ the FLOP ratio (1 = the ideal), and the max abs difference between the masked dense and the pruned
network's output at batch 1 (relative to the output's max abs value).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from msp import cli
from msp.export.prune import plan_pruning, prune
from msp.export.report import count_params, forward_latencies, machine
from msp.models import MultiTaskNet, ResNet
from msp.models.presets import BACKBONES
from msp.sparsity import CostModel, GroupSpec

_SPARSITIES = flags.DEFINE_list("sparsities", ["0.3", "0.5", "0.7"], "Fractions of each conv's groups zeroed.")
_PATTERNS = flags.DEFINE_list("patterns", ["independent", "shared"], "Dead-channel patterns (see the docstring).")
_MULTIPLE_OF = flags.DEFINE_integer("multiple_of", 8, "Round kept channel counts up to a multiple of this "
                                    "(1: no rounding; 8 keeps the thinnest convs at widths the CPU runs well).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes timed.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed forwards per network and batch size (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed forwards per network and batch size before timing.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Input height and width.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random dead-channel patterns.")

PAPER_BACKBONE = ResNet(**BACKBONES["resnet50_deep_dilated"])


def random_alive(backbone: ResNet, widths: dict[str, int], sparsity: float, pattern: str,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
  """conv path → (O,) bool mask with round(sparsity·O) random dead channels, drawn per conv (`independent`) or
  per channel space (`shared`)."""
  spaces = backbone.channel_spaces()
  groups = [(conv,) for space in spaces for conv in space] if pattern == "independent" else spaces
  alive = {}
  for group in groups:
    width = widths[group[0]]
    mask = np.ones(width, bool)
    mask[rng.choice(width, round(sparsity * width), replace=False)] = False
    alive.update({conv: mask for conv in group})
  return alive


def backbone_variables(variables: dict) -> dict:
  return {collection: tree["backbone"] for collection, tree in variables.items()}


def main(argv):
  del argv
  size, rng = _IMAGE_SIZE.value, np.random.default_rng(_SEED.value)
  net = MultiTaskNet(PAPER_BACKBONE, heads=())
  variables = jax.jit(lambda: net.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))()
  spec = GroupSpec.from_params(variables["params"])
  widths = {name.removeprefix("backbone/"): layer.num_groups for name, layer in zip(spec.names, spec.layers)}
  flops = lambda model, params: CostModel.from_model(model, GroupSpec.from_params(params), size).dense_flops
  networks = {"dense": (PAPER_BACKBONE, backbone_variables(variables))}
  rows = {"dense": dict(pattern="dense", sparsity=0.0, flops=flops(net, variables["params"]),
                        params=count_params(variables["params"]), difference=0.0)}
  images = jax.random.uniform(jax.random.key(1), (1, size, size, 3))
  for pattern in _PATTERNS.value:
    for sparsity in map(float, _SPARSITIES.value):
      alive = random_alive(PAPER_BACKBONE, widths, sparsity, pattern, rng)
      masked = {**variables, "params": spec.scale_groups(
          variables["params"], [jnp.asarray(alive[name.removeprefix("backbone/")]) for name in spec.names])}
      plan = plan_pruning(net, masked["params"], _MULTIPLE_OF.value)
      pruned_net, pruned = prune(net, masked, plan)
      label = f"{pattern} {sparsity:.0%}"
      networks[label] = (pruned_net.backbone, backbone_variables(pruned))
      # the backbone's output keeps the channels that the heads read
      dense_out = PAPER_BACKBONE.apply(backbone_variables(masked), images, train=False)[..., plan.feature_channels]
      pruned_out = pruned_net.backbone.apply(networks[label][1], images, train=False)
      rows[label] = dict(pattern=pattern, sparsity=sparsity, flops=flops(pruned_net, pruned["params"]),
                         params=count_params(pruned["params"]),
                         difference=float(jnp.max(jnp.abs(dense_out - pruned_out)) / jnp.max(jnp.abs(dense_out))))
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  load = os.getloadavg()[0]
  latencies = forward_latencies(networks, size, batch_sizes, _REPEATS.value, _WARMUP.value)

  dense = rows["dense"]
  print(f"Machine: {machine()}; load average {load:.1f} before timing, {os.getloadavg()[0]:.1f} after")
  print(f"Backbone: dilated ResNet-50 (deep stem, bottleneck [3, 4, 6, 3], output stride 8) at {size}², "
        f"{dense['flops'] / 1e9:.1f} GFLOPs and {dense['params'] / 1e6:.2f} M parameters dense; kept channel counts "
        f"rounded to a multiple of {_MULTIPLE_OF.value}; median of {_REPEATS.value} forwards after {_WARMUP.value} "
        "warm-up, networks timed round-robin\n")
  header = "| pattern | group sparsity | FLOPs kept | params kept | max rel. Δ |"
  header += "".join(f" ms (batch {b}) | speedup (b{b}) | ÷ FLOP ratio (b{b}) |" for b in batch_sizes)
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for label, row in rows.items():
    ratio = dense["flops"] / row["flops"]
    line = (f"| {row['pattern']} | {row['sparsity']:.0%} | {row['flops'] / dense['flops']:.1%} | "
            f"{row['params'] / dense['params']:.1%} | {row['difference']:.1g} |")
    for b in batch_sizes:
      speedup = latencies["dense"][b] / latencies[label][b]
      line += f" {latencies[label][b] * 1e3:.0f} | {speedup:.2f} | {speedup / ratio:.2f} |"
    print(line, flush=True)


if __name__ == "__main__":
  cli.run(main)
