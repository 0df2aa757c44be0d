"""A hub id pinned to a revision (branch, tag or commit), loaded offline from a fake local Hugging Face cache
(tests/hub_helpers.py: ``main`` and the tag ``v1`` hold different weights; nothing here reaches a hub).
"""

from __future__ import annotations

import pytest
import torch

from hub_helpers import MAIN, REPO, V1, same_weights
from safealign.config import load_config, to_dict
from safealign.errors import UserError
from safealign.eval.config import EvalConfig
from safealign.io.rundir import eval_fingerprint
from safealign.models.embedded import DEFAULT_MODEL, ModelUnavailableError
from safealign.models.identity import loaded_identity, model_identity, weights_fingerprint
from safealign.models.load import load_model, load_tokenizer
from safealign.models.tiny import tiny_model, tiny_tokenizer


def test_without_a_revision_the_cached_main_loads_as_before(hub_cache):
    model, _ = load_model(REPO)
    assert same_weights(model, 0)
    assert model_identity(REPO) == {"spec": REPO, "kind": "hub", "hub_id": REPO, "revision": MAIN,
                                    "fingerprint": weights_fingerprint(hub_cache / "snapshots" / MAIN)}  # fmt: skip


@pytest.mark.parametrize("revision", ["v1", V1])
def test_a_revision_loads_that_snapshot_and_the_identity_records_it(hub_cache, revision):
    model, tokenizer = load_model(REPO, revision=revision)
    assert same_weights(model, 1) and not same_weights(model, 0)
    assert tokenizer.chat_template == tiny_tokenizer().chat_template
    assert load_tokenizer(REPO, revision=revision).chat_template == tiny_tokenizer().chat_template
    expected = {"spec": REPO, "kind": "hub", "hub_id": REPO, "requested_revision": revision, "revision": V1,
                "fingerprint": weights_fingerprint(hub_cache / "snapshots" / V1)}  # fmt: skip
    assert model_identity(REPO, revision=revision) == expected
    assert loaded_identity(model) == expected  # a loaded model knows the revision it was loaded at
    assert expected["fingerprint"] != model_identity(REPO)["fingerprint"]


def test_an_eval_config_passes_its_revision_to_the_hf_backend(hub_cache):
    from safealign.eval.backends import build_chat_model, chat_model_identity

    config = load_config(EvalConfig, None, [f"model.name={REPO}", "model.revision=v1", "model.device=cpu"])
    target = build_chat_model(config.model)
    assert same_weights(target.model, 1)
    assert chat_model_identity(target)["requested_revision"] == "v1"


def test_the_eval_fingerprint_names_a_revision_and_only_then():
    def fingerprint(*overrides):
        return eval_fingerprint(to_dict(load_config(EvalConfig, None, [f"model.name={REPO}", *overrides])))

    unset, main, v1 = fingerprint(), fingerprint("model.revision=main"), fingerprint("model.revision=v1")
    assert "model.revision" not in unset.values  # runs recorded before the setting keep their digest
    assert v1.values["model.revision"] == "v1"
    assert len({unset.digest, main.digest, v1.digest}) == 3


def test_a_revision_not_in_the_cache_offline_names_the_model_and_revision(hub_cache):
    with pytest.raises(ModelUnavailableError, match=f"'{REPO}' at revision 'v2' is not in the local hub cache"):
        load_model(REPO, revision="v2")


def test_a_revision_for_a_spec_that_is_no_hub_id_is_refused_naming_the_field(tmp_path, monkeypatch):
    from safealign.models import embedded

    monkeypatch.setattr(embedded, "_fill_from_wheel", lambda *a: pytest.fail("a refused spec was fetched"))
    folder = tmp_path / "local"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    for spec, what in ((DEFAULT_MODEL, "built-in model"), (str(folder), "local folder"),
                       ("tiny-random", "tiny random")):  # fmt: skip
        with pytest.raises(UserError, match=f"revision='v1'.*{what}"):
            load_model(spec, revision="v1")
        with pytest.raises(UserError, match=f"revision='v1'.*{what}"):
            model_identity(spec, revision="v1")
    with pytest.raises(UserError, match=f"model.revision='v1'.*{DEFAULT_MODEL}.*built-in model"):
        load_config(EvalConfig, None, ["model.revision=v1"])
    with pytest.raises(UserError, match="model.revision='v1'.*local folder"):
        load_config(EvalConfig, None, [f"model.name={folder}", "model.revision=v1"])
    with pytest.raises(UserError, match="model.revision.*openai"):
        load_config(EvalConfig, None, ["model.backend=openai", "model.name=gpt-x", "model.revision=v1"])


def test_a_revision_the_reachable_hub_does_not_have_names_it(monkeypatch):
    import transformers

    from safealign.models import load as load_module

    monkeypatch.setattr(load_module, "hub_reachable", lambda repo_id: True)

    def no_such_revision(*args, **kwargs):
        raise OSError(f"{kwargs['revision']} is not a valid git identifier (branch name, tag name or commit id)")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_such_revision)
    with pytest.raises(UserError, match=f"^model spec '{REPO}' at revision 'nope': .*not a valid git identifier"):
        load_model(REPO, revision="nope")


def test_the_demo_refuses_an_eval_revision_it_would_not_use():
    from safealign.pipelines.demo_config import load_demo_config

    for overrides in ([f"model={REPO}", "eval.model.revision=v1"], ["eval.model.revision=v1"]):
        with pytest.raises(UserError, match="eval.model.revision: every demo stage sets eval.model.revision itself"):
            load_demo_config(overrides)
    config = load_demo_config([f"model={REPO}"])
    config.eval.model.revision = "v1"  # set in code, past the overrides: the config's own check
    with pytest.raises(UserError, match="eval.model.revision: the demo evaluates the model named by `model`"):
        config.validate()


def test_an_adapter_on_a_pinned_base_records_the_revision_and_loads_its_base_there(hub_cache, tmp_path):
    import json

    from safealign.models import LoraSettings

    model, tokenizer = load_model(REPO, revision="v1", lora=LoraSettings(r=2, alpha=4))
    model.save_pretrained(tmp_path / "adapter")  # no tokenizer: the base's, at its revision, is loaded
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["revision"] == "v1"
    adapter, _ = load_model(str(tmp_path / "adapter"))
    base = adapter.get_base_model()  # LoRA layers wrap its linear weights; its embeddings stand as loaded
    assert torch.equal(base.get_input_embeddings().weight, tiny_model(seed=1).get_input_embeddings().weight)
    assert load_tokenizer(str(tmp_path / "adapter")).chat_template == tiny_tokenizer().chat_template
    assert model_identity(str(tmp_path / "adapter"))["base"] == model_identity(REPO, revision="v1")
    assert loaded_identity(adapter)["base"]["revision"] == V1


def test_an_adapter_config_revision_for_a_base_that_is_no_hub_id_is_refused_naming_the_file(tmp_path):
    import json

    from safealign.models import LoraSettings

    model, _ = load_model("tiny-random", lora=LoraSettings(r=2, alpha=4))
    model.save_pretrained(tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "revision": "v1"}))
    with pytest.raises(UserError, match="adapter_config.json: revision='v1'.*tiny random"):
        load_model(str(tmp_path / "adapter"))


def test_the_identity_a_config_names_before_loading_is_the_loaded_models(hub_cache, tmp_path, monkeypatch):
    """config_identity (what eval-mtbench claims its output directory with, before loading) matches
    chat_model_identity of the model build_chat_model loads: a hub id at a revision, a folder named by a relative
    path, the tiny model, an endpoint's name. A mismatch would refuse the directory on the next run."""
    from safealign.eval.backends import build_chat_model, chat_model_identity, config_identity
    from safealign.eval.config import ModelConfig

    tiny_model().save_pretrained(tmp_path / "saved")
    tiny_tokenizer().save_pretrained(tmp_path / "saved")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    for config in (ModelConfig(backend="hf", name=REPO, revision="v1", device="cpu"),
                   ModelConfig(backend="hf", name="saved", device="cpu"),
                   ModelConfig(backend="hf", name="tiny-random", device="cpu"),
                   ModelConfig(backend="openai", name="gpt-4")):  # fmt: skip
        before = config_identity(config)
        assert chat_model_identity(build_chat_model(config)) == before, config.name
    assert config_identity(ModelConfig(backend="hf", name="saved"))["path"] == str(tmp_path / "saved")


def test_an_answering_hub_is_asked_before_the_identity_is_taken(hub_cache, tmp_path, monkeypatch):
    """Runs take a hub id's identity before they load it, and the load downloads what the cache lacks: the identity
    read the cache as it was (an empty cache gave no fingerprint, so a resume never checked the weights; a stale
    ``main`` named the commit the load did not use). It now fetches the weights the load will use first, as a
    built-in model is fetched first."""
    from huggingface_hub import constants

    from hub_helpers import FakeHub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub = FakeHub(hub_cache, monkeypatch)
    got = model_identity(REPO)
    assert got == {"spec": REPO, "kind": "hub", "hub_id": REPO, "revision": MAIN,
                   "fingerprint": weights_fingerprint(hub_cache / "snapshots" / MAIN)}  # fmt: skip
    assert {name for name, _ in hub.downloads} == {"config.json", "model.safetensors"}  # not the tokenizer
    assert model_identity(REPO, revision="v1")["fingerprint"] == weights_fingerprint(hub_cache / "snapshots" / V1)
    (hub_cache / "refs" / "main").write_text(V1)  # main moved on the hub since this cache fetched it
    assert model_identity(REPO)["revision"] == V1
    from transformers import AutoModelForCausalLM

    # what the load then takes from the cache (its weights: the fake hub gives the identity's files only)
    assert same_weights(AutoModelForCausalLM.from_pretrained(REPO, local_files_only=True), 1)


def test_the_identity_fetches_the_checkpoint_from_pretrained_loads_and_no_other_weights(hub_cache, tmp_path,
                                                                                         monkeypatch):
    """A sharded checkpoint: its index and shards; not a consolidated copy beside it (nor pytorch_model.bin), which
    the load does not download and which would change the snapshot's fingerprint."""
    from huggingface_hub import constants

    from hub_helpers import FakeHub

    sharded = hub_cache / "snapshots" / ("c" * 40)
    tiny_model(seed=2).save_pretrained(sharded, max_shard_size="100KB")
    (sharded / "consolidated.safetensors").write_bytes(b"another copy")
    (sharded / "pytorch_model.bin").write_bytes(b"another format")
    (hub_cache / "refs" / "main").write_text("c" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub = FakeHub(hub_cache, monkeypatch)
    got = model_identity(REPO)
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) == 2 and sorted(name for name, _ in hub.downloads) == [
        "config.json", *shards, "model.safetensors.index.json"]
    local = tmp_path / "empty-cache" / hub_cache.name / "snapshots" / ("c" * 40)
    assert got["revision"] == "c" * 40 and got["fingerprint"] == weights_fingerprint(local) is not None
