"""Pretrained weights: local files, the offline cache, clear errors, and no network access."""

import os

import pytest
import torch
import torchvision

from segproto.models import build_backbone, load_checkpoint_file

TV_R18_FILE = os.path.basename(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)


def _tv_resnet18_state():
    torch.manual_seed(123)
    return torchvision.models.resnet18(weights=None).state_dict()


def _assert_backbone_equals(backbone, state):
    own = backbone.state_dict()
    checked = 0
    for k, v in state.items():
        if k.startswith("fc."):
            assert k not in own
            continue
        assert torch.equal(own[k], v), k
        checked += 1
    assert checked == len(own)  # every backbone tensor came from the file


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix"])
def test_local_file_loads_exact_weights(tmp_path, wrap):
    state = _tv_resnet18_state()
    obj = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state},
        "module_prefix": {"module." + k: v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "r18.pth"
    torch.save(obj, path)
    b = build_backbone("resnet18", 8, pretrained=str(path))
    _assert_backbone_equals(b, state)


def test_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "nope" / "weights.pth")
    with pytest.raises(FileNotFoundError, match="nope/weights.pth"):
        build_backbone("resnet18", 16, pretrained=path)


def test_mismatched_keys_are_listed(tmp_path):
    state = {"backbone." + k: v for k, v in _tv_resnet18_state().items()}
    path = tmp_path / "seg.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError) as err:
        build_backbone("resnet18", 16, pretrained=str(path))
    msg = str(err.value)
    assert "missing keys" in msg and "layer1.0.conv1.weight" in msg
    assert "unexpected keys" in msg and "backbone.layer1.0.conv1.weight" in msg
    with pytest.warns(UserWarning, match="missing keys"):
        build_backbone("resnet18", 16, pretrained=str(path), strict=False)


def test_shape_mismatch_is_reported(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(RuntimeError, match="shape mismatches"):
        build_backbone("resnet18", 16, pretrained=str(path))


def test_pretrained_true_is_rejected():
    with pytest.raises(ValueError, match="cache"):
        build_backbone("resnet18", 16, pretrained=True)


def test_cache_missing_torchvision_names_file_and_url(empty_cache, no_network):
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("resnet50", 16, pretrained="cache")
    msg = str(err.value)
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert url in msg
    assert str(empty_cache / os.path.basename(url)) in msg


def test_cache_missing_timm_names_file_and_url(empty_cache, no_network):
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("timm:hrnet_w48", None, pretrained="cache")
    msg = str(err.value)
    assert "https://huggingface.co/timm/hrnet_w48.ms_in1k/resolve/main/model.safetensors" in msg
    assert str(empty_cache / "hrnet_w48.ms_in1k.safetensors") in msg


def test_no_network_fixture_really_blocks(no_network):
    import socket

    with pytest.raises(no_network):
        socket.create_connection(("example.com", 80))


def test_cache_hit_torchvision_loads_offline(empty_cache, no_network):
    state = _tv_resnet18_state()
    torch.save(state, empty_cache / TV_R18_FILE)
    b = build_backbone("resnet18", 16, pretrained="cache")
    _assert_backbone_equals(b, state)


def test_cache_hit_timm_loads_offline_into_features_model(empty_cache, no_network):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    full = timm.create_model("resnet18")
    save_file(full.state_dict(), str(empty_cache / "resnet18.a1_in1k.safetensors"))
    b = build_backbone("timm:resnet18", 16, pretrained="cache")
    for name in ("conv1.weight", "layer1.0.bn1.running_mean", "layer4.1.conv2.weight"):
        assert torch.equal(b.body.state_dict()[name], full.state_dict()[name]), name
    # the in-memory state dict handed to timm is not kept on the model
    assert "state_dict" not in getattr(b.body, "pretrained_cfg", {})


def test_timm_local_file_and_key_report(tmp_path):
    import timm

    torch.manual_seed(3)
    full = timm.create_model("efficientnet_b0")
    path = tmp_path / "effnet.pth"
    torch.save({"state_dict": full.state_dict()}, path)
    b = build_backbone("timm:efficientnet_b0", 16, pretrained=str(path))
    ref = full.conv_stem.weight
    assert torch.equal(b.body.conv_stem.weight, ref)
    bad = tmp_path / "bad.pth"
    torch.save({"encoder." + k: v for k, v in full.state_dict().items()}, bad)
    with pytest.raises(RuntimeError, match="encoder.conv_stem.weight"):
        build_backbone("timm:efficientnet_b0", 16, pretrained=str(bad))


def test_load_checkpoint_file_rejects_non_state_dicts(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"epoch": 1}, path)
    with pytest.raises(ValueError, match="state dict"):
        load_checkpoint_file(str(path))
