"""Backbones: strides/dilations actually applied, channel bookkeeping, timm features_only."""

import pytest
import torch
from torch import nn

from segproto.models import ResNetBackbone, TimmBackbone, build_backbone

X = torch.randn(2, 3, 64, 64)


def _sizes(feats):
    return [tuple(f.shape[-2:]) for f in feats]


@pytest.mark.parametrize(
    "output_stride, strides",
    [(8, [4, 8, 8, 8]), (16, [4, 8, 16, 16]), (32, [4, 8, 16, 32])],
)
def test_resnet18_feature_sizes_follow_output_stride(output_stride, strides):
    # torchvision refuses replace_stride_with_dilation for BasicBlock; we dilate by hand.
    b = build_backbone("resnet18", output_stride).eval()
    with torch.no_grad():
        feats = b(X)
    assert b.strides == strides and b.output_stride == output_stride
    assert b.channels == [64, 128, 256, 512] == [f.shape[1] for f in feats]
    assert _sizes(feats) == [(64 // s, 64 // s) for s in strides]


@pytest.mark.parametrize("output_stride, d3, d4", [(8, 2, 4), (16, 1, 2)])
def test_resnet18_dilation_replaces_stride(output_stride, d3, d4):
    b = build_backbone("resnet18", output_stride)
    # first block of a dilated layer: stride 1, previous dilation; later blocks: new dilation
    assert b.layer4[0].conv1.stride == (1, 1) and b.layer4[0].downsample[0].stride == (1, 1)
    assert b.layer4[1].conv1.dilation == (d4, d4) and b.layer4[1].conv1.padding == (d4, d4)
    assert b.layer4[0].conv1.dilation == (d3, d3)
    assert b.layer3[1].conv2.dilation == (d3, d3)


def test_resnet50_forward_and_dilation():
    b = build_backbone("resnet50", 8).eval()
    with torch.no_grad():
        feats = b(torch.randn(1, 3, 32, 32))
    assert b.channels == [256, 512, 1024, 2048] == [f.shape[1] for f in feats]
    assert _sizes(feats) == [(8, 8), (4, 4), (4, 4), (4, 4)]
    assert b.layer3[1].conv2.dilation == (2, 2) and b.layer4[1].conv2.dilation == (4, 4)
    assert not hasattr(b, "fc")


def test_timm_features_only_channels_from_feature_info():
    b = build_backbone("timm:efficientnet_b0", 16, pretrained=None).eval()
    assert isinstance(b, TimmBackbone)
    info = b.body.feature_info
    assert b.channels == [info.channels()[i] for i in b.keep]
    assert b.strides == [4, 8, 16, 16]
    with torch.no_grad():
        feats = b(X)
    assert [f.shape[1] for f in feats] == b.channels
    assert _sizes(feats) == [(16, 16), (8, 8), (4, 4), (4, 4)]


def test_timm_resnet18_output_stride_8_matches_torchvision_layout():
    b = build_backbone("timm:resnet18", 8).eval()
    with torch.no_grad():
        feats = b(X)
    assert b.strides == [4, 8, 8, 8] and b.channels == [64, 128, 256, 512]
    assert _sizes(feats) == [(16, 16), (8, 8), (8, 8), (8, 8)]


def test_timm_hrnet_native_strides_and_unsupported_output_stride():
    b = build_backbone("timm:hrnet_w18_small", None).eval()
    with torch.no_grad():
        feats = b(X)
    assert b.strides == [4, 8, 16, 32]
    assert b.channels == [f.shape[1] for f in feats] == [16, 32, 64, 128]  # raw HRNet branches
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("timm:hrnet_w18_small", 8)


@pytest.mark.parametrize("name", ["resnet19", "vgg16", "resnet", "timm:not_a_model_xyz"])
def test_unknown_backbone_names_the_key(name):
    with pytest.raises(ValueError, match="backbone"):
        build_backbone(name, 16)


def test_resnet_rejects_bad_output_stride():
    with pytest.raises(ValueError, match="output_stride"):
        ResNetBackbone(18, output_stride=4)


def test_backbone_modules_are_torchvision_modules():
    # we wrap torchvision rather than re-implementing blocks
    from torchvision.models.resnet import BasicBlock, Bottleneck

    assert isinstance(build_backbone("resnet18", 16).layer1[0], BasicBlock)
    assert isinstance(build_backbone("resnet50", 16).layer1[0], Bottleneck)
    assert isinstance(build_backbone("resnet18", 16).bn1, nn.BatchNorm2d)
