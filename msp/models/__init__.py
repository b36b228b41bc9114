"""Flax Linen models: the ResNet backbone, task heads and the multi-task network."""
from msp.models.heads import AttributeHead, DenseHead
from msp.models.layers import ConvNorm
from msp.models.multitask import MultiTaskNet
from msp.models.resnet import ResNet
from msp.models.factory import build_model

__all__ = ["AttributeHead", "ConvNorm", "DenseHead", "MultiTaskNet", "ResNet", "build_model"]
