"""Shared fixtures: an empty offline weight cache and a socket layer that refuses to connect."""

import socket

import pytest
import torch


class NetworkAttempted(AssertionError):
    """Raised if code under test tries to open a network connection."""


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """Points torch.hub and the Hugging Face cache at empty temporary directories."""
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    try:
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    except ImportError:
        pass
    return hub / "checkpoints"


@pytest.fixture
def no_network(monkeypatch):
    """Any socket creation, DNS lookup or connection raises NetworkAttempted."""

    def refuse(*args, **kwargs):
        raise NetworkAttempted(f"network access attempted: {args!r}")

    class RefusingSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse(*args)

    monkeypatch.setattr(socket, "socket", RefusingSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return NetworkAttempted
