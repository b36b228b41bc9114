"""Paper-scale backbones (docs/method.md §13) as `ResNet` fields, the form `config.model.backbone` takes.

resnet50_deep_dilated: the authors' dilated ResNet-D-50: deep stem of three 3×3 convs 3→64→64→128 + max-pool,
  bottleneck stages [3, 4, 6, 3] of widths 64/128/256/512 (×4 out), stage 3 dilation 2, stage 4 dilation 4 in every
  block, output stride 8, no conv biases. 55 conv kernels, 23,578,304 conv weights, 26,752 output channels.
resnet50_torchvision_dilated: torchvision's `resnet50(replace_stride_with_dilation=[False, True, True])` without
  its classifier, as LibMTL uses it: 7×7 stem conv (64) + max-pool, the same stages, stride on the 3×3 conv (v1.5),
  and the first block of a dilated stage keeps the previous stage's dilation. Its weights import from a torchvision
  state dict (`msp.models.torchvision_import`).
"""
_RESNET50_STAGES = dict(block="bottleneck", depths=(3, 4, 6, 3), widths=(64, 128, 256, 512), strides=(1, 2, 1, 1),
                        dilations=(1, 1, 2, 4), activation="relu")

BACKBONES = {
    "resnet50_deep_dilated": dict(_RESNET50_STAGES, stem="deep", stem_width=128),
    "resnet50_torchvision_dilated": dict(_RESNET50_STAGES, stem="torchvision", stem_width=64,
                                         dilate_first_block=False),
}
