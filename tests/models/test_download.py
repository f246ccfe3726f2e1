"""``model.pretrained: download`` against a local HTTP server on 127.0.0.1 (never the internet).

The server serves files from a dict and can cut a transfer short (it announces the full
``Content-Length`` and closes the connection halfway), so the truncation and checksum paths are
exercised for real, through the same ``urllib`` code a user's download goes through.
"""

import hashlib
import http.server
import io
import os
import threading

import pytest
import torch
import torchvision

from segproto.models import build_backbone
from segproto.models.download import DownloadError, download_file, hash_prefix_from_name


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    truncate: set = set()

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.truncate else body)
        if self.path in self.truncate:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"files": {}, "truncate": set()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, handler
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _leftovers(directory):
    return sorted(p for p in os.listdir(directory) if p.endswith(".partial"))


def test_complete_download_is_verified_and_placed(server, tmp_path):
    base, handler = server
    body = os.urandom(200_000)
    digest = hashlib.sha256(body).hexdigest()
    handler.files["/w.pth"] = body
    target = tmp_path / "cache" / f"w-{digest[:8]}.pth"
    assert download_file(f"{base}/w.pth", str(target), sha256=digest[:8], progress=False) == str(target)
    assert target.read_bytes() == body
    assert _leftovers(target.parent) == []


def test_truncated_transfer_leaves_no_file(server, tmp_path):
    base, handler = server
    handler.files["/w.pth"] = os.urandom(300_000)
    handler.truncate.add("/w.pth")
    target = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match=r"truncated: 150000 of 300000 bytes|broke off"):
        download_file(f"{base}/w.pth", str(target), progress=False)
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_checksum_mismatch_leaves_no_file_and_keeps_old_one(server, tmp_path):
    base, handler = server
    handler.files["/w.pth"] = b"not the weights" * 100
    target = tmp_path / "w.pth"
    target.write_bytes(b"previous file")
    with pytest.raises(DownloadError, match="SHA-256 .* expected 0123abcd"):
        download_file(f"{base}/w.pth", str(target), sha256="0123abcd", progress=False)
    assert target.read_bytes() == b"previous file"
    assert _leftovers(tmp_path) == []


def test_http_error_names_url_and_target(server, tmp_path):
    base, _ = server
    target = tmp_path / "w.pth"
    with pytest.raises(DownloadError) as err:
        download_file(f"{base}/missing.pth", str(target), progress=False)
    assert f"{base}/missing.pth" in str(err.value) and str(target) in str(err.value)
    assert "Not Found" in str(err.value)
    assert not target.exists()


def test_progress_bar_is_drawn(server, tmp_path, capsys):
    base, handler = server
    handler.files["/w.pth"] = os.urandom(100_000)
    download_file(f"{base}/w.pth", str(tmp_path / "w.pth"), progress=True)
    err = capsys.readouterr().err
    assert "w.pth" in err and "100%" in err


def test_hash_prefix_from_name():
    assert hash_prefix_from_name("https://x/resnet18-f37072fd.pth") == "f37072fd"
    assert hash_prefix_from_name("/c/efficientnet-lite0-57934424.pth") == "57934424"
    assert hash_prefix_from_name("model.safetensors") is None


def _serialised_resnet18():
    torch.manual_seed(5)
    state = torchvision.models.resnet18(weights=None).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    return state, buf.getvalue()


def _point_torchvision_at(monkeypatch, url):
    """Makes torchvision's resnet18 weights URL point at the local server."""
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(type(weights), "url", property(lambda self: url))


def test_backbone_download_end_to_end(server, empty_cache, monkeypatch):
    base, handler = server
    state, body = _serialised_resnet18()
    name = f"resnet18-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    handler.files[f"/{name}"] = body
    _point_torchvision_at(monkeypatch, f"{base}/{name}")
    backbone = build_backbone("resnet18", 16, pretrained="download")
    assert (empty_cache / name).is_file()
    assert torch.equal(backbone.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    # second build: served from the cache (the server no longer has the file)
    handler.files.clear()
    build_backbone("resnet18", 16, pretrained="download")


def test_backbone_download_checksum_mismatch(server, empty_cache, monkeypatch):
    base, handler = server
    _, body = _serialised_resnet18()
    handler.files["/resnet18-00000000.pth"] = body
    _point_torchvision_at(monkeypatch, f"{base}/resnet18-00000000.pth")
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("resnet18", 16, pretrained="download")
    msg = str(err.value)
    assert "download failed" in msg and "SHA-256" in msg
    assert f"{base}/resnet18-00000000.pth" in msg and str(empty_cache / "resnet18-00000000.pth") in msg
    assert os.listdir(empty_cache) == []


@pytest.fixture
def offline(monkeypatch):
    """Every connection fails the way it does on a machine without a network."""
    import socket

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(socket, "getaddrinfo", unreachable)


def test_download_offline_gives_the_cache_message(empty_cache, offline):
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("resnet50", 16, pretrained="download")
    msg = str(err.value)
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert url in msg and str(empty_cache / os.path.basename(url)) in msg
    assert "Network is unreachable" in msg
    assert os.listdir(empty_cache) == []


def test_timm_download_to_the_cache_path(server, empty_cache, monkeypatch):
    import timm
    from safetensors.torch import save

    base, handler = server
    torch.manual_seed(3)
    full = timm.create_model("resnet18")
    handler.files["/timm/resnet18.a1_in1k/resolve/main/model.safetensors"] = save(full.state_dict())
    monkeypatch.setenv("HF_ENDPOINT", base)
    backbone = build_backbone("timm:resnet18", 16, pretrained="download")
    assert (empty_cache / "resnet18.a1_in1k.safetensors").is_file()
    assert torch.equal(backbone.body.state_dict()["conv1.weight"], full.state_dict()["conv1.weight"])
