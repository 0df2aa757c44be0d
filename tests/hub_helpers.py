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
