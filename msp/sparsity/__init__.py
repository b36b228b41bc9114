"""Channel-wise group sparsity: groups from the parameter tree or a traced forward pass, the group-lasso penalty,
its prox, statistics."""
from msp.sparsity.groups import DEFAULT_INCLUDE, GROUPINGS, GroupSpec, LayerGroups
from msp.sparsity.penalty import group_lasso
from msp.sparsity.budget import BUDGET_TARGETS, Budget
from msp.sparsity.costs import COST_KINDS, CostModel, backbone_flops
from msp.sparsity.magnitude import PRUNE_SCOPES, magnitude_prune
from msp.sparsity.prox import block_soft_threshold, floor_engaged, proximal_group_lasso, shrink_factors
from msp.sparsity.stats import sparsity_stats
from msp.sparsity.streams import flops_budget, group_spec, stream_ties
from msp.sparsity.thin import ThinBackbone, thin_backbone
from msp.sparsity.tracing import ChannelGraph, ChannelSpace, trace_channels

__all__ = ["BUDGET_TARGETS", "Budget", "COST_KINDS", "ChannelGraph", "ChannelSpace", "CostModel", "DEFAULT_INCLUDE",
           "GROUPINGS", "GroupSpec", "LayerGroups", "PRUNE_SCOPES", "ThinBackbone", "backbone_flops",
           "block_soft_threshold", "floor_engaged", "flops_budget", "group_lasso", "group_spec", "magnitude_prune",
           "proximal_group_lasso", "shrink_factors", "sparsity_stats", "stream_ties", "thin_backbone",
           "trace_channels"]
