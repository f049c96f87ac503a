"""Test-wide guards: no test may download weights. The Hugging Face hub is put offline before anything imports it, and
torch.hub's downloader (used by torchvision, torchmetrics and torch-fidelity) raises instead of connecting."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


class DownloadBlocked(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    import torch.hub

    def blocked(url, *args, **kwargs):
        raise DownloadBlocked(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", blocked)
    yield
