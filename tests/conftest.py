"""Shared fixtures: tiny random models (no downloads) and the public data in ../shared/data."""

from __future__ import annotations

import logging

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine threads contend.
torch.set_num_threads(1)

SHARED_DATA = Path(os.environ.get("SAFEALIGN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data folder beside the repository; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public data folder not found at {SHARED_DATA} (set SAFEALIGN_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture()
def sleeper():
    """A live process that is not this one (a lock's holder still running; tests/lock_helpers.py)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from safealign.models.tiny import tiny_tokenizer as make

    return make()


@pytest.fixture()
def tiny_model():
    from safealign.models.tiny import tiny_model as make

    return make()


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """A fake offline Hugging Face hub cache: hub_helpers.REPO with ``main`` and the tag ``v1`` at different weights
    (tests/hub_helpers.py); the repository's folder in it."""
    from hub_helpers import build_hub_cache

    return build_hub_cache(tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Model and reference caches go to this session's temporary folder, never the user's cache; and no test reaches
    a hub: the hub libraries are offline (the variable, which peft and safealign read, and huggingface_hub's flag,
    read at its import, which transformers asks), so a test that would download fails instead (peft's
    save_pretrained looked up its base model's config.json on huggingface.co)."""
    from huggingface_hub import constants

    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path_factory.getbasetemp() / "safealign-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True)
def _logger_levels():
    """The library loggers' levels as each test found them: a command's main() quietens loggers for its own run
    (bench/dpo_throughput.py sets ``safealign`` to WARNING), which silenced every later test's INFO records."""
    names = ("safealign", "transformers", "trl", "datasets", "accelerate")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture()
def model_loads(monkeypatch):
    """Every ``load_model`` call from now on (through ``safealign.models`` or ``safealign.models.load``, the two
    import paths the runs use), as (spec, its keyword arguments, the model loaded); each call still loads."""
    import safealign.models
    import safealign.models.load

    loads, load = [], safealign.models.load.load_model

    def spy(spec, **kwargs):
        model, tokenizer = load(spec, **kwargs)
        loads.append((spec, kwargs, model))
        return model, tokenizer

    for module in (safealign.models, safealign.models.load):
        monkeypatch.setattr(module, "load_model", spy)
    return loads


@pytest.fixture()
def no_model_load(monkeypatch):
    """Any model load is a test failure: every check here must come first."""
    import safealign.models
    import safealign.models.load

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    for module in (safealign.models, safealign.models.load):  # both import paths the runs use
        monkeypatch.setattr(module, "load_model", forbidden)
