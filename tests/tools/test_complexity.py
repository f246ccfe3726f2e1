"""python -m segproto.tools.complexity: parameter count and FLOPs against independent counts
(numel of a separately built model; the convolution formula); the speed is printed, not checked."""

import json

import torch

from segproto.tools.complexity import count_flops, main


def test_flops_of_a_convolution_follow_the_formula():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.rand(2, 3, 10, 12)
    assert count_flops(conv, x) == 2 * 2 * 8 * 3 * 3 * 3 * 10 * 12  # batch x (multiply + add) x MACs


def test_cli_on_a_config_and_a_checkpoint(tmp_path, capsys):
    import yaml

    from segproto.config import config_from_dict, config_to_dict
    from segproto.models import build_segmentor

    d = {"data": {"root": str(tmp_path / "absent")},
         "model": {"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16}}
    cfg = config_from_dict(d)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp_path / "c.json"
    assert main([str(tmp_path / "cfg.yaml"), "--size", "32", "48", "--iters", "1", "--warmup", "0",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "params:" in printed and "GFLOPs" in printed and "images/s:" in printed
    res = json.loads(out.read_text())
    reference = build_segmentor({**config_to_dict(cfg)["model"], "pretrained": None}, 22)  # 22 built-in classes
    assert res["params"] == sum(p.numel() for p in reference.parameters())
    with torch.no_grad():
        want = count_flops(reference.eval(), torch.rand(1, 3, 32, 48))
    assert res["flops"] == want > 0
    assert not (tmp_path / "absent").exists()
    assert main([str(tmp_path / "missing.pth")]) == 1
    assert "missing.pth" in capsys.readouterr().err
