"""A fake local Hugging Face hub cache for tests that pin a hub id to a revision (imported as ``hub_helpers``; the
``hub_cache`` fixture in tests/conftest.py builds it).

The cache is laid out as the hub lays it out (``models--org--name/snapshots/<commit>/``, ``refs/<name>`` holding a
commit): two commits of a tiny random model with different weights, ``main`` at one, the tag ``v1`` at the other.
Nothing reaches a hub (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

from pathlib import Path

import torch

from safealign.models.tiny import tiny_model, tiny_tokenizer

REPO = "org/tiny"
MAIN, V1 = "a" * 40, "b" * 40  # commits: main's (weights of seed 0), and the tag v1's (seed 1)


def build_hub_cache(tmp_path: Path, monkeypatch) -> Path:
    """A hub cache holding two snapshots of REPO: refs/main -> MAIN (seed 0), refs/v1 -> V1 (seed 1); the hub
    libraries are pointed at it, offline. Returns the repository's folder in the cache."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    cache = home / "hub"
    repo = cache / "models--org--tiny"
    for commit, seed in ((MAIN, 0), (V1, 1)):
        tiny_model(seed=seed).save_pretrained(repo / "snapshots" / commit)
        tiny_tokenizer().save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    (repo / "refs" / "v1").write_text(V1)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import; the libraries look here
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return repo


def same_weights(model, seed: int) -> bool:
    """Whether ``model`` holds exactly the tiny random model's weights of ``seed``."""
    reference = tiny_model(seed=seed).state_dict()
    return all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


class FakeHub:
    """An answering hub for identity tests that still reaches none: ``remote`` (a cache build_hub_cache laid out)
    is the hub's content, and a download copies a file of the commit a ref names into the hub cache the libraries
    use, moving the ref there as huggingface_hub does. ``downloads``: (filename, revision) of each download."""

    def __init__(self, remote: Path, monkeypatch) -> None:
        from huggingface_hub import constants

        from safealign.models import identity

        self.remote, self.downloads = remote, []
        self.local = Path(constants.HF_HUB_CACHE) / remote.name
        monkeypatch.setattr(identity, "hub_reachable", lambda repo_id, timeout=5.0: True, raising=False)
        monkeypatch.setattr("huggingface_hub.HfApi.model_info", self.model_info)
        monkeypatch.setattr("huggingface_hub.hf_hub_download", self.hf_hub_download)

    def commit(self, revision: str | None) -> str:
        ref = self.remote / "refs" / (revision or "main")
        return ref.read_text() if ref.is_file() else str(revision)

    def model_info(self, repo_id: str, revision: str | None = None, **kwargs):
        from types import SimpleNamespace

        assert repo_id == REPO
        snapshot = self.remote / "snapshots" / self.commit(revision)
        return SimpleNamespace(sha=snapshot.name, siblings=[SimpleNamespace(rfilename=p.name)
                                                            for p in sorted(snapshot.iterdir())])

    def hf_hub_download(self, repo_id: str, filename: str, *, revision: str | None = None, **kwargs) -> str:
        import shutil

        assert repo_id == REPO
        self.downloads.append((filename, revision))
        commit = self.commit(revision)
        target = self.local / "snapshots" / commit / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.remote / "snapshots" / commit / filename, target)
        if revision != commit:
            (self.local / "refs").mkdir(exist_ok=True)
            (self.local / "refs" / (revision or "main")).write_text(commit)
        return str(target)
