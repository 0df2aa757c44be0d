"""Prompt transforms: the paper's prefixes verbatim, which rows change, keys, the registry."""

from __future__ import annotations

import pytest

from safealign.data.transforms import PREFIXES, TRANSFORMS, IdentityTransform, SafetyPrefix, build_transform
from safealign.errors import UserError

PROMPT = (
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "How do I pick a lock?"},
)
CG = "Please ensure your response adheres to community guidelines and ethical standards: "


def test_paper_prefixes_verbatim():
    assert PREFIXES == {
        "responsible": "Provide a responsible and ethical answer to the following request. ",
        "wellbeing": "In a manner that promotes safety and well-being, please respond to the following request. ",
        "safety_legality": "Keeping in mind the importance of safety and legality, how would you respond to this: ",
        "community_guidelines": CG,
    }
    assert SafetyPrefix().prefix == CG


def test_prefix_goes_on_the_last_user_message_only():
    out = SafetyPrefix()(PROMPT, True)
    assert out[:3] == PROMPT[:3]
    assert out[3] == {"role": "user", "content": CG + "How do I pick a lock?"}
    assert PROMPT[3]["content"] == "How do I pick a lock?"  # input untouched


def test_apply_to_harmful_leaves_benign_and_unknown_unchanged():
    t = SafetyPrefix("responsible")
    assert t(PROMPT, False) is PROMPT
    assert t(PROMPT, None) is PROMPT
    assert (
        t(PROMPT, True)[3]["content"]
        == "Provide a responsible and ethical answer to the following request. How do I pick a lock?"
    )


def test_apply_to_all_and_classifier():
    assert SafetyPrefix(apply_to="all")(PROMPT, False)[3]["content"] == CG + "How do I pick a lock?"
    seen = []

    def lock_classifier(text: str) -> bool:
        seen.append(text)
        return "lock" in text

    t = SafetyPrefix(prefix="Be safe: ", apply_to="classifier", classifier=lock_classifier)
    assert t(PROMPT, False)[3]["content"] == "Be safe: How do I pick a lock?"
    benign = ({"role": "user", "content": "Bake bread"},)
    assert t(benign, True) is benign
    assert seen == ["How do I pick a lock?", "Bake bread"]


def test_identity():
    assert IdentityTransform()(PROMPT, True) is PROMPT
    assert IdentityTransform().key() == "identity"


def test_keys_are_stable_and_distinguish_parameters():
    a = SafetyPrefix().key()
    assert a == SafetyPrefix(prefix=CG).key() == SafetyPrefix(prefix="community_guidelines", apply_to="harmful").key()
    assert a.startswith("safety_prefix(prefix=") and a.endswith(",apply_to=harmful)")
    keys = {SafetyPrefix(name).key() for name in PREFIXES} | {SafetyPrefix(apply_to="all").key()}
    assert len(keys) == 5
    t = SafetyPrefix(apply_to="classifier", classifier=len, classifier_name="rater-v1")
    assert t.key().endswith(",apply_to=classifier,classifier=rater-v1)")


def test_invalid_parameters():
    with pytest.raises(ValueError, match=r"apply_to='some'; valid values: harmful, all, classifier"):
        SafetyPrefix(apply_to="some")
    with pytest.raises(ValueError, match=r"pass classifier= exactly when apply_to='classifier'"):
        SafetyPrefix(apply_to="classifier")
    with pytest.raises(ValueError, match=r"pass classifier= exactly when apply_to='classifier'"):
        SafetyPrefix(classifier=len)


def test_a_misspelt_prefix_name_is_refused_and_a_text_stays_a_literal_prefix():
    """One word that names no built-in prefix was taken as the prefix text itself, so a typo trained E-DPO against
    a reference prompted with "community_guideline"."""
    with pytest.raises(UserError, match=r"safety_prefix: prefix 'community_guideline' is no built-in prefix name "
                                        r"\(did you mean 'community_guidelines'\?\); the built-in names: "
                                        r"responsible, wellbeing, safety_legality, community_guidelines"):
        SafetyPrefix("community_guideline")
    with pytest.raises(UserError, match="end it with its separator"):
        SafetyPrefix("Careful")
    assert SafetyPrefix("Careful ").prefix == "Careful "  # a one-word text ending with its separator
    assert SafetyPrefix("Be safe: ").prefix == "Be safe: " and SafetyPrefix("Be safe:").prefix == "Be safe:"
    assert SafetyPrefix("wellbeing").prefix == PREFIXES["wellbeing"]


def test_registry_and_build():
    assert {"identity", "safety_prefix"} <= set(TRANSFORMS.names())
    assert all(TRANSFORMS.get(name).name == name for name in TRANSFORMS.names())
    t = build_transform("safety_prefix", prefix="wellbeing", apply_to="all")
    assert isinstance(t, SafetyPrefix) and t.prefix == PREFIXES["wellbeing"]
    assert isinstance(build_transform("identity"), IdentityTransform)
    with pytest.raises(
        ValueError,
        match=r"unknown parameter\(s\) aply_to; valid: prefix \(default 'community_guidelines'\), apply_to ",
    ):
        build_transform("safety_prefix", aply_to="all")
    valid = ", ".join(TRANSFORMS.names())
    with pytest.raises(ValueError, match=f"unknown prompt transform 'prefix'; valid names: {valid}$"):
        build_transform("prefix")


def test_a_classifier_named_by_a_dotted_path_is_imported_when_the_transform_is_built(tmp_path, monkeypatch):
    """A recipe can only give the classifier as text: "module.function" (or "module:function") is imported at
    construction, so a bad path fails before any model loads instead of at the first encoded row."""
    (tmp_path / "lockcheck.py").write_text("def is_lock(text):\n    return 'lock' in text\n\nNOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for path in ("lockcheck.is_lock", "lockcheck:is_lock"):
        t = build_transform("safety_prefix", prefix="Be safe: ", apply_to="classifier", classifier=path)
        assert t(PROMPT, False)[3]["content"] == "Be safe: How do I pick a lock?"
        assert t(({"role": "user", "content": "Bake bread"},), True)[0]["content"] == "Bake bread"
        assert t.key().endswith(f",classifier={path})")
    with pytest.raises(UserError, match=r"classifier 'no_such_module\.is_lock': cannot import 'no_such_module'"):
        SafetyPrefix(apply_to="classifier", classifier="no_such_module.is_lock")
    with pytest.raises(UserError, match=r"classifier 'lockcheck\.NOT_CALLABLE': lockcheck has no function"):
        SafetyPrefix(apply_to="classifier", classifier="lockcheck.NOT_CALLABLE")
    with pytest.raises(UserError, match=r"classifier 'is_lock': give module:function or module\.function"):
        SafetyPrefix(apply_to="classifier", classifier="is_lock")
