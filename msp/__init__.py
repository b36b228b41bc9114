"""msp: meta-sparsity for multi-task networks in JAX/Flax.

models/    ResNet backbone + task heads (Flax Linen)
tasks/     task registry: head kind and loss per task
sparsity/  channel groups, group-lasso penalty, prox, statistics
meta/      λ = exp(ρ), episodes, inner loop, meta-objective and its gradient modes
parallel/  mesh and shardings (episodes over the `data` axis)
train/     meta-train state, jitted meta-step, building both from a config
"""
__version__ = "0.1.0"
