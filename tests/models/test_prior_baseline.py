"""The prior-only few-shot floor against a float64 re-derivation of the prior from raw features."""

import pytest
import torch
import torch.nn.functional as F

from segproto.models.hdmnet import HDMNet
from segproto.models.prior_baseline import PriorBaseline


def _reference_prior(feats_q, feats_s, masks):
    """Mean over layer4 and layer3 of the min-max normalised max cosine to support foreground,
    averaged over shots, written with explicit loops in float64."""
    levels = []
    for q, s_all in ((feats_q[-1], feats_s[-1]), (feats_q[-2], feats_s[-2])):
        q = q.double()[0]  # [C, h, w]
        c, h, w = q.shape
        shots = []
        for j in range(s_all.shape[0]):
            s = s_all[j].double()  # [C, hs, ws]
            m = F.interpolate(masks[j][None, None].double(), size=s.shape[-2:], mode="nearest-exact")[0, 0]
            fg = s.flatten(1)[:, m.flatten() > 0]  # [C, n]
            qn = q.flatten(1) / q.flatten(1).norm(dim=0, keepdim=True).clamp_min(1e-12)
            sn = fg / fg.norm(dim=0, keepdim=True).clamp_min(1e-12)
            best = (qn.T @ sn).max(1).values  # [h*w]
            shots.append(best)
        p = torch.stack(shots).mean(0)
        p = (p - p.min()) / (p.max() - p.min() + 1e-7)
        levels.append(p.view(h, w))
    return (levels[0] + levels[1]) / 2


@pytest.mark.parametrize("shots", [1, 2])
def test_prior_baseline_thresholds_the_reference_prior(shots):
    torch.manual_seed(0)
    model = HDMNet("resnet18", dim=16, mid_dim=16, heads=(1,), sr_ratios=(1,), strides=(1,), match_heads=1,
                   feature_cache_mb=0).eval()
    floor = PriorBaseline(model, threshold=0.5).eval()
    img = torch.randn(1, 3, 64, 64)
    support = torch.randn(1, shots, 3, 64, 64)
    mask = torch.zeros(1, shots, 64, 64, dtype=torch.long)
    mask[:, :, 8:40, 16:48] = 1
    logits = floor(img, support, mask)
    assert logits.shape == (1, 2, 64, 64)
    with torch.no_grad():
        fq = model.backbone(img)
        fs = model.backbone(support[0] * (mask[0] == 1)[:, None].float())
    ref = _reference_prior(fq, fs, mask[0])
    ref = F.interpolate(ref[None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    got = (logits[0, 1] - logits[0, 0]) / 2 + 0.5
    assert torch.allclose(got.double(), ref, atol=1e-4)
    assert torch.equal(logits.argmax(1)[0], (ref > 0.5).long())


def test_threshold_is_checked():
    model = HDMNet("resnet18", dim=16, mid_dim=16, heads=(1,), sr_ratios=(1,), strides=(1,), match_heads=1)
    with pytest.raises(ValueError, match="threshold"):
        PriorBaseline(model, threshold=1.5)
