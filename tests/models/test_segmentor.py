"""Segmentor outputs in train/eval, config-driven building, SyncBN, determinism."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from segproto.models import DeepLabV3PlusHead, FCNHead, ProjectionHead, Segmentor, build_segmentor

X = torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplabv3plus_resnet18_train_dict_and_eval_logits(output_stride):
    model = build_segmentor(dict(backbone="resnet18", output_stride=output_stride, channels=64), 5)
    assert isinstance(model.decode_head, DeepLabV3PlusHead)
    model.train()
    out = model(X)
    assert set(out) == {"logits", "feats", "backbone"}
    assert out["logits"].shape == (2, 5, 16, 16)  # decoder stride 4
    assert out["feats"].shape == (2, 64, 16, 16) and model.feat_channels == 64
    assert model.logit_stride == 4
    hi = 64 // output_stride
    mid = 64 // min(16, output_stride)  # layer3 is stride 8 at OS8, 16 at OS16
    assert [tuple(f.shape[1:]) for f in out["backbone"]] == [
        (64, 16, 16), (128, 8, 8), (256, mid, mid), (512, hi, hi),
    ]
    model.eval()
    with torch.no_grad():
        logits = model(X)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5, 64, 64)


def test_eval_logits_are_bilinear_upsampled_decoder_logits():
    model = build_segmentor(dict(arch="fcn", backbone="resnet18", output_stride=16), 3).eval()
    with torch.no_grad():
        small, _ = model.decode_head(model.backbone(X))
        full = model(torch.clone(X))
    expected = nn.functional.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    assert small.shape[-1] == 4 and model.logit_stride == 16
    assert torch.allclose(full, expected)


def test_projection_head_attaches_to_training_feats():
    model = build_segmentor(dict(backbone="resnet18", output_stride=16, channels=32), 4).train()
    proj = ProjectionHead(model.feat_channels, 16)
    emb = proj(model(X)["feats"])
    assert emb.shape == (2, 16, 16, 16)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2, 16, 16), atol=1e-5)


def test_build_from_attribute_object_and_resnet50_tiny():
    cfg = SimpleNamespace(arch="fcn", backbone="resnet50", output_stride=8, pretrained=None,
                          channels=32, dropout=0.0, sync_bn=False)
    model = build_segmentor(cfg, 2).eval()
    assert isinstance(model.decode_head, FCNHead)
    assert isinstance(model.decode_head.dropout, nn.Identity)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 2, 32, 32)
    assert model.backbone.channels[-1] == 2048 and model.logit_stride == 8


def test_timm_hrnet_fcn_uses_concat_of_branches():
    model = build_segmentor(dict(arch="fcn", backbone="timm:hrnet_w18_small", output_stride=None,
                                 channels=32), 3).train()
    head = model.decode_head
    assert head.input_transform == "concat" and head.conv_cat is None
    assert head.convs[0][0].in_channels == sum(model.backbone.channels)
    out = model(X)
    assert out["logits"].shape == (2, 3, 16, 16) and model.logit_stride == 4


@pytest.mark.parametrize(
    "cfg, key",
    [
        (dict(arch="pspnet", backbone="resnet18"), "arch"),
        (dict(backbone="resnet77"), "backbone"),
        (dict(backbone="resnet18", output_stride=4), "output_stride"),
        (dict(backbone="resnet18", output_stride=None), "output_stride"),
        (dict(arch="fcn", backbone="resnet18", head_input="sum"), "head_input"),
    ],
)
def test_bad_config_names_the_key(cfg, key):
    with pytest.raises(ValueError, match=key):
        build_segmentor(cfg, 3)


def test_sync_bn_conversion():
    model = build_segmentor(dict(backbone="resnet18", channels=32, sync_bn=True), 3)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, nn.SyncBatchNorm) for m in bns)
    plain = build_segmentor(dict(backbone="resnet18", channels=32), 3)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in plain.modules())
    assert len(bns) == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


def test_fixed_seed_gives_identical_models_and_outputs():
    def run():
        torch.manual_seed(0)
        model = build_segmentor(dict(backbone="resnet18", output_stride=16, channels=32), 3)
        model.train()
        x = torch.randn(2, 3, 32, 32)
        return model(x)["logits"]  # dropout active: the seed must fix it too

    a, b = run(), run()
    assert torch.equal(a, b)
    torch.manual_seed(1)
    model = build_segmentor(dict(backbone="resnet18", channels=32), 3)
    assert not torch.equal(model(torch.randn(2, 3, 32, 32))["logits"], a)


def test_segmentor_accepts_custom_parts():
    from segproto.models import build_backbone

    backbone = build_backbone("resnet18", 16)
    model = Segmentor(backbone, FCNHead(backbone.channels, 4, channels=16)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 40)).shape == (1, 4, 48, 40)  # non-square input
