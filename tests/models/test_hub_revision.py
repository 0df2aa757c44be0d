"""A hub id pinned to a revision (branch, tag or commit), loaded offline from a fake local Hugging Face cache.

The cache is built here as the hub lays it out (``models--org--name/snapshots/<commit>/``, ``refs/<name>`` holding a
commit), two commits of a tiny random model with different weights: ``main`` at one, the tag ``v1`` at the other.
Nothing here reaches a hub (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import pytest
import torch

from safealign.config import load_config, to_dict
from safealign.errors import UserError
from safealign.eval.config import EvalConfig
from safealign.io.rundir import eval_fingerprint
from safealign.models.embedded import DEFAULT_MODEL, ModelUnavailableError
from safealign.models.identity import loaded_identity, model_identity, weights_fingerprint
from safealign.models.load import load_model, load_tokenizer
from safealign.models.tiny import tiny_model, tiny_tokenizer

REPO = "org/tiny"
MAIN, V1 = "a" * 40, "b" * 40  # commits: main's, and the tag v1's (other weights)


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """A hub cache holding two snapshots of REPO: refs/main -> MAIN (seed 0), refs/v1 -> V1 (seed 1)."""
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


def same_weights(model, seed):
    reference = tiny_model(seed=seed).state_dict()
    return all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


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

    with pytest.raises(UserError, match="eval.model.revision: the demo evaluates the model named by `model`"):
        load_demo_config([f"eval.model.name={REPO}", "eval.model.revision=v1"])
    with pytest.raises(UserError, match="revision='v1'.*built-in model"):  # refused by the eval config already
        load_demo_config(["eval.model.revision=v1"])
