"""Flax Linen models: the ResNet backbone, task heads and the multi-task network."""
from msp.models.deeplab import ASPPHead, ConvPoolMLPHead
from msp.models.heads import AttributeHead, DenseHead
from msp.models.layers import ConvNorm
from msp.models.multitask import MultiTaskNet
from msp.models.resnet import ResNet
from msp.models.factory import build_model

__all__ = ["ASPPHead", "AttributeHead", "ConvNorm", "ConvPoolMLPHead", "DenseHead", "MultiTaskNet", "ResNet",
           "build_model"]
