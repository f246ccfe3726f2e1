"""Decode heads and the projection head."""

import pytest
import torch
from torch import nn

from segproto.models import ASPP, DeepLabV3PlusHead, FCNHead, ProjectionHead, aspp_dilations


def _features(channels=(16, 24, 32, 40), sizes=(16, 8, 8, 8), batch=2):
    return [torch.randn(batch, c, s, s) for c, s in zip(channels, sizes)]


def _aspp_rates(aspp: ASPP):
    return [b[0].dilation[0] for b in aspp.branches[1:]]


@pytest.mark.parametrize("os_, rates", [(16, (6, 12, 18)), (8, (12, 24, 36)), (32, (3, 6, 9))])
def test_aspp_dilations_per_output_stride(os_, rates):
    assert aspp_dilations(os_) == rates
    head = DeepLabV3PlusHead([16, 24, 32, 40], 5, output_stride=os_, channels=32)
    assert _aspp_rates(head.aspp) == list(rates)
    assert [b[0].padding[0] for b in head.aspp.branches[1:]] == list(rates)  # 'same' padding


def test_aspp_image_pool_branch_is_global():
    aspp = ASPP(8, 4, (1, 2, 3)).eval()
    x = torch.randn(1, 8, 6, 6)
    pooled = aspp.image_pool(x)
    assert pooled.shape == (1, 4, 1, 1)
    # a constant shift of one pixel changes the pooled branch, i.e. it sees the whole map
    y = x.clone()
    y[..., 0, 0] += 10
    assert not torch.allclose(aspp.image_pool(y), pooled)


def test_deeplabv3plus_shapes_and_low_level_projection():
    head = DeepLabV3PlusHead([16, 24, 32, 40], 7, output_stride=8, channels=32, dropout=0.1)
    assert head.low_proj[0].out_channels == 48 and head.low_proj[0].in_channels == 16
    logits, feats = head(_features())
    assert logits.shape == (2, 7, 16, 16)  # stride of features[0]
    assert feats.shape == (2, 32, 16, 16)


@pytest.mark.parametrize("head_cls", ["deeplab", "fcn"])
def test_feats_are_the_classifier_input(head_cls):
    if head_cls == "deeplab":
        head = DeepLabV3PlusHead([16, 24, 32, 40], 5, channels=32)
    else:
        head = FCNHead([16, 24, 32, 40], 5, channels=32)
    head.eval()  # dropout off: the classifier is the only op left after feats
    with torch.no_grad():
        logits, feats = head(_features())
        assert torch.allclose(head.classifier(feats), logits)


def test_fcn_last_and_concat_inputs():
    feats_in = _features(sizes=(16, 8, 4, 2))
    last = FCNHead([16, 24, 32, 40], 3, channels=32)
    logits, feats = last(feats_in)
    assert logits.shape == (2, 3, 2, 2) and feats.shape == (2, 32, 2, 2)
    assert last.convs[0][0].in_channels == 40 and len(last.convs) == 2
    assert last.conv_cat[0].in_channels == 40 + 32
    concat = FCNHead([16, 24, 32, 40], 3, channels=32, input_transform="concat",
                     num_convs=1, concat_input=False)
    logits, feats = concat(feats_in)
    assert concat.convs[0][0].in_channels == 16 + 24 + 32 + 40
    assert logits.shape == (2, 3, 16, 16) and feats.shape == (2, 32, 16, 16)
    with pytest.raises(ValueError, match="input_transform"):
        FCNHead([8], 3, input_transform="mean")


@pytest.mark.parametrize("kind", ["convmlp", "linear"])
def test_projection_head_is_unit_norm(kind):
    torch.manual_seed(0)
    proj = ProjectionHead(32, proj_dim=16, kind=kind)
    x = torch.randn(2, 32, 5, 7) * 10
    out = proj(x)
    assert out.shape == (2, 16, 5, 7)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 5, 7), atol=1e-5)
    out.sum().backward()  # gradients flow through the normalisation
    assert all(p.grad is not None for p in proj.parameters())
    raw = proj(x, normalize=False)  # before the normalisation (PiCo normalises the pixels it uses)
    assert raw.shape == out.shape and not torch.allclose(raw.norm(dim=1), torch.ones(2, 5, 7))
    torch.testing.assert_close(raw / raw.norm(dim=1, keepdim=True), out)


def test_projection_head_layout():
    mlp = ProjectionHead(32, 256, "convmlp").proj
    assert [type(m) for m in mlp] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert mlp[0].kernel_size == (1, 1) and mlp[3].out_channels == 256
    lin = ProjectionHead(32, 64, "linear").proj
    assert isinstance(lin, nn.Conv2d) and lin.out_channels == 64
    with pytest.raises(ValueError, match="kind"):
        ProjectionHead(32, kind="mlp3")
