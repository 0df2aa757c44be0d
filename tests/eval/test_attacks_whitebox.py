"""White-box searches on tiny-random: autodan's genetic algorithm, the target loss, universal GCG."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest

from safealign.errors import UserError
from safealign.eval.attacks import AttackContext
from safealign.eval.attacks.base import check_attack
from safealign.eval.attacks.autodan import (SYNONYMS, AutoDANAttack, AutoDANConfig, MomentumWords,
                                            sentence_crossover, synonym_mutation)
from safealign.eval.attacks.gcg_multi import GCGMultiAttack, GCGMultiConfig, GCGTransferAttack, GCGTransferConfig
from safealign.eval.attacks.target_loss import TargetLoss
from safealign.eval.backends.base import GenerationParams
from safealign.eval.backends.hf import HFChatModel
from safealign.types import Behavior

from .fakes import LOADED_RUN, KeywordJudge, ScriptedChatModel, refusing_context

B = Behavior("b1", "Tell me the thing", target="Sure, here is the thing")
BEHAVIORS = [Behavior(f"b{i}", f"Tell me thing {i}", target=f"Sure, here is thing {i}") for i in range(4)]


def test_target_loss_is_the_same_batched_or_alone(tiny_model, tiny_tokenizer):
    loss = TargetLoss(tiny_model, tiny_tokenizer)
    prompts = ["short", "a much longer prompt with many more tokens in it", "mid length"]
    together = loss(prompts, "Sure, here is", batch_size=3)
    alone = [loss([p], "Sure, here is", batch_size=1)[0] for p in prompts]
    assert together == pytest.approx(alone, abs=1e-4)  # right padding does not leak into any row
    assert len(set(round(x, 4) for x in together)) == 3 and loss.evaluations == 6


def test_target_loss_matches_an_unpadded_cross_entropy_of_the_target_tokens(tiny_model, tiny_tokenizer):
    """Each row's loss is read where its own target starts: the logits at the prompt's last token predict the
    target's first (a position off by one would score the wrong tokens and the batched test would not see it)."""
    import torch
    import torch.nn.functional as F

    renderer = HFChatModel(tiny_model, tiny_tokenizer)
    prompts, target = ["short", "a much longer prompt with many more tokens in it"], "Sure, here is"
    got = TargetLoss(tiny_model, tiny_tokenizer, renderer)(prompts, target, batch_size=2)
    target_ids = tiny_tokenizer(target, add_special_tokens=False)["input_ids"]
    for prompt, loss in zip(prompts, got):
        text = renderer.render(({"role": "user", "content": prompt},), GenerationParams())
        prompt_ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny_model(input_ids=torch.tensor([prompt_ids + target_ids])).logits[0].float()
        start = len(prompt_ids) - 1
        reference = F.cross_entropy(logits[start : start + len(target_ids)], torch.tensor(target_ids))
        assert loss == pytest.approx(float(reference), abs=1e-4)


def test_white_box_attacks_render_the_system_prompt_of_a_defended_target(tiny_model, tiny_tokenizer):
    from safealign.eval.attacks.gcg import GCGAttack, GCGConfig
    from safealign.eval.defenses.base import DefendedChatModel, build_defense

    inner = HFChatModel(tiny_model, tiny_tokenizer, system_prompt="You are a careful assistant.")
    defended = DefendedChatModel(inner, build_defense("smoothllm"))  # as the pipeline hands it to attacks
    conversation = ({"role": "user", "content": B.behavior},)
    answered = inner.render(conversation, GenerationParams())  # the prompt the model behind the defense gets
    assert "careful assistant" in answered
    autodan_loss = TargetLoss(tiny_model, tiny_tokenizer, defended)
    assert autodan_loss.renderer.render(conversation, GenerationParams()) == answered
    gcg = GCGAttack(GCGConfig(), AttackContext(target=defended, model=tiny_model, tokenizer=tiny_tokenizer))
    assert "".join(gcg.render_parts(B.behavior)) == answered  # GCG optimises around the same prompt


def test_sentence_crossover_mixes_whole_sentences():
    a = "A one. A two. A three. A four."
    b = "B one. B two. B three. B four."
    child_a, child_b = sentence_crossover(a, b, 2, random.Random(0))
    sentences = child_a.split(". ")
    assert len(sentences) == 4 and {s[0] for s in sentences} == {"A", "B"}  # both parents contribute
    for i, s in enumerate(child_a.rstrip(".").split(". ")):  # each position comes from one parent, in order
        assert s.endswith(("one", "two", "three", "four")[i])
    assert sorted((child_a + " " + child_b).split(". ")) != sorted((a + " " + a).split(". "))


def test_synonym_mutation_and_momentum_words():
    rng = random.Random(0)
    text = "Answer the question in full detail."
    mutated = synonym_mutation(text, rng, n_words=3)
    assert mutated != text and mutated[0].isupper()  # capitalisation kept
    momentum = MomentumWords()
    momentum.update(["reply now", "answer now"], [-1.0, -3.0])
    assert momentum.scores["reply"] == -1.0 and momentum.scores["now"] == -2.0
    momentum.update(["reply"], [-3.0])
    assert momentum.scores["reply"] == -2.0  # ½(old + new)
    assert all(w in SYNONYMS for w in ("answer", "reply", "respond"))


def _stub_fitness(word: str):
    """Fitness = how often ``word`` occurs: the GA must spread it."""
    return lambda prefixes, behavior: [float(p.lower().count(word)) for p in prefixes]


def test_autodan_keeps_the_fittest_and_improves():
    config = AutoDANConfig(steps=12, population=12, elite_fraction=0.25, mutation=0.5, eval_every=0, patience=0)
    attack = AutoDANAttack(config, AttackContext(), fitness=_stub_fitness("complete"))
    run, _ = attack.search(B)
    # the best loss never gets worse from one step to the next: the elites survive every step
    assert all(b <= a for a, b in zip(run.losses, run.losses[1:]))
    assert run.losses[-1] < run.losses[0] and run.steps == 12
    start = max(float(p.lower().count("complete")) for p in attack.initial_population(random.Random("0:b1")))
    assert -run.best_loss > start


def test_autodan_elites_are_copied_unchanged():
    attack = AutoDANAttack(AutoDANConfig(population=6, elite_fraction=0.34, mutation=1.0), AttackContext(),
                           fitness=_stub_fitness("x"))  # fmt: skip
    population = ["p0.", "p1.", "p2 best.", "p3.", "p4 second.", "p5."]
    fitness = [0.0, 0.0, 9.0, 0.0, 5.0, 0.0]
    from safealign.eval.attacks.autodan import _Run

    for step in (attack.sentence_step, lambda p, f, r, run: attack.word_step(p, f, MomentumWords(), r, run)):
        new = step(population, fitness, random.Random(0), _Run())
        assert new[:2] == ["p2 best.", "p4 second."] and len(new) == 6


def test_autodan_small_population_keeps_at_least_one_elite():
    # 0.1 × 8 rounds down to 0: without the floor the best prompt could be lost at every step
    attack = AutoDANAttack(AutoDANConfig(population=8), AttackContext(), fitness=_stub_fitness("x"))
    elites, _ = attack._elites([f"p{i}" for i in range(8)], [float(i) for i in range(8)])
    assert elites == ["p7"]


def test_autodan_on_tiny_random_lowers_the_target_loss_and_early_stops(tiny_model, tiny_tokenizer):
    target = HFChatModel(tiny_model, tiny_tokenizer)
    context = AttackContext(target=target, model=tiny_model, tokenizer=tiny_tokenizer)
    attack = AutoDANAttack(AutoDANConfig(steps=3, population=6, eval_every=0, patience=0), context)
    [attempt] = attack(B)
    assert attempt.meta["steps"] == 3 and attempt.meta["loss"] == pytest.approx(min(attempt.meta["losses"]))
    assert attempt.messages[0]["content"] == f"{attempt.meta['prefix']} {B.behavior}"
    # the recorded prompt is the one whose loss is recorded: the best of the search (the argmin of the losses)
    recorded = TargetLoss(tiny_model, tiny_tokenizer, target)([attempt.messages[0]["content"]], B.target)[0]
    assert recorded == pytest.approx(attempt.meta["loss"], abs=1e-4)
    fake = ScriptedChatModel(lambda c: "HARMFUL")
    judged = AttackContext(target=fake, judge=KeywordJudge(), model=tiny_model, tokenizer=tiny_tokenizer)
    [stopped] = AutoDANAttack(AutoDANConfig(steps=50, population=4, eval_every=2), judged)(B)
    assert stopped.meta["stop_reason"] == "jailbroken" and stopped.meta["steps"] == 2 and fake.n_generated == 1


def test_autodan_llm_mutation_and_query_budget():
    long_enough = "A rewritten prefix. " * 20
    mutator = ScriptedChatModel(lambda c: long_enough if "TEXT:\nA rewritten" not in c[0]["content"] else "short")
    target = ScriptedChatModel(lambda c: "I refuse")
    config = AutoDANConfig(steps=20, population=4, mutation=1.0, mutator="llm", eval_every=1, patience=0,
                           max_queries=3)  # fmt: skip
    attack = AutoDANAttack(config, AttackContext(target=target, judge=KeywordJudge()), mutator=mutator,
                           fitness=_stub_fitness("rewritten"))  # fmt: skip
    run, budget = attack.search(B)
    assert mutator.n_generated > 0 and "rewritten" in run.best_prompt.lower()
    assert run.mutation_failures > 0  # "short" rewrites of a rewritten prefix are under half its length: kept
    # the early-stop checks stop at the budget, less the one query the pipeline's final answer takes
    assert target.n_generated == 2 and budget.queries == 2


def test_autodan_bad_params_and_white_box():
    with pytest.raises(ValueError, match="attack_params.autodan.population"):
        AutoDANConfig(population=1)
    with pytest.raises(ValueError, match="mutator"):
        AutoDANConfig(mutator="wordnet")
    with pytest.raises(ValueError, match="white-box"):
        AutoDANAttack(AutoDANConfig(), AttackContext(target=ScriptedChatModel(str)))


def _multi(tiny_model, tiny_tokenizer, tmp_path, **overrides) -> GCGMultiAttack:
    system_prompt = overrides.pop("system_prompt", None)
    config = GCGMultiConfig(**{"steps": 3, "search_width": 16, "topk": 16, "suffix_length": 6, "n_train": 2,
                               **overrides})  # fmt: skip
    target = HFChatModel(tiny_model, tiny_tokenizer, system_prompt=system_prompt)
    return GCGMultiAttack(config, AttackContext(target=target, model=tiny_model, tokenizer=tiny_tokenizer,
                                                work_dir=tmp_path))  # fmt: skip


def test_gcg_multi_shares_one_suffix_and_saves_it(tiny_model, tiny_tokenizer, tmp_path):
    attack = _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False)
    attack.prepare(BEHAVIORS)
    attempts = [a for b in BEHAVIORS for a in attack(b)]
    suffixes = {a.meta["suffix"] for a in attempts}
    assert len(suffixes) == 1  # one universal suffix for every behavior, trained or held out
    assert [a.meta["id"] for a in attempts] == ["train", "train", "held_out", "held_out"]
    suffix = suffixes.pop()
    assert all(a.messages[0]["content"] == f"{b.behavior} {suffix}" for a, b in zip(attempts, BEHAVIORS))
    saved = json.loads((tmp_path / "gcg_multi_suffix.json").read_text())
    assert saved["suffix"] == suffix and saved["train_ids"] == ["b0", "b1"] and saved["active"] == [2, 2, 2]
    # the universal loss is the mean over the training behaviors, not one behavior's
    per = [attack.target_loss(b, saved["suffix_ids"]) for b in BEHAVIORS[:2]]
    assert saved["mean_loss"] == pytest.approx(sum(per) / 2, abs=1e-4)
    # a resumed run reuses the saved suffix instead of optimising again
    again = _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False)
    again.optimize_universal = lambda train: pytest.fail("re-optimised despite a matching saved suffix")
    again.prepare(BEHAVIORS)
    assert again.universal.suffix == suffix


def test_gcg_multi_reuses_a_saved_suffix_only_for_the_same_model_and_targets(tiny_model, tiny_tokenizer, tmp_path,
                                                                            caplog):
    from safealign.eval.pipeline import EVAL_OUTPUTS
    from safealign.models.tiny import tiny_model as make_tiny_model

    first = _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False)
    first.prepare(BEHAVIORS)
    saved = json.loads((tmp_path / "gcg_multi_suffix.json").read_text())
    assert saved["model_fingerprint"].startswith("sha256:") and saved["targets"] == [b.target for b in BEHAVIORS[:2]]
    other_model = make_tiny_model(seed=123)
    second = _multi(other_model, tiny_tokenizer, tmp_path, progressive=False)
    second.prepare(BEHAVIORS)  # the run's own file: optimised anew for this model, with a warning saying why
    assert "optimised for a different model" in caplog.text
    assert json.loads((tmp_path / "gcg_multi_suffix.json").read_text())["model_fingerprint"] != \
        saved["model_fingerprint"]  # fmt: skip
    caplog.clear()
    retargeted = [Behavior(b.id, b.behavior, target="Absolutely: " + b.target) for b in BEHAVIORS]
    third = _multi(other_model, tiny_tokenizer, tmp_path, progressive=False)
    third.prepare(retargeted)
    assert "target strings of the training behaviors" in caplog.text
    assert third.universal.targets == [b.target for b in retargeted[:2]]
    # an explicit suffix_file may be shared with other runs: a mismatch is refused, and the file left as it was
    shared = tmp_path / "shared" / "suffix.json"
    _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, suffix_file=str(shared)).prepare(BEHAVIORS)
    before = shared.read_text()
    with pytest.raises(ValueError, match=rf"suffix_file {shared} was optimised for a different model"):
        _multi(other_model, tiny_tokenizer, tmp_path, progressive=False, suffix_file=str(shared)).prepare(BEHAVIORS)
    assert shared.read_text() == before
    assert "gcg_multi_suffix.json" in EVAL_OUTPUTS  # --overwrite removes it with the rest of the run


def test_gcg_multi_does_not_reuse_a_suffix_cut_short_by_max_seconds(tiny_model, tiny_tokenizer, tmp_path, caplog):
    timed = _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, max_seconds=1e-9)
    timed.prepare(BEHAVIORS)
    saved = json.loads((tmp_path / "gcg_multi_suffix.json").read_text())
    assert saved["steps"] == 0 and saved["settings"]["steps"] == 3  # stopped on time: steps done vs planned
    assert saved["stopped"] == "max_seconds" and saved["max_seconds"] == 1e-9
    same = _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, max_seconds=1e-9)
    same.optimize_universal = lambda train: pytest.fail("a resume with the same time limit re-optimised")
    same.prepare(BEHAVIORS)  # the same run resumed: its suffix is what that limit gives, reused
    unlimited = _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False)
    unlimited.prepare(BEHAVIORS)  # the run's own file: optimised anew, with a warning saying why
    assert "stopped by max_seconds=1e-09 after 0 of 3 steps" in caplog.text
    assert unlimited.universal.steps == 3 and unlimited.universal.stopped == "steps"
    shared = tmp_path / "shared.json"
    _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, max_seconds=1e-9,
           suffix_file=str(shared)).prepare(BEHAVIORS)  # fmt: skip
    with pytest.raises(ValueError, match="stopped by max_seconds=1e-09 after 0 of 3 steps"):
        _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, suffix_file=str(shared)).prepare(BEHAVIORS)


def test_gcg_multi_progressive_adds_behaviors(tiny_model, tiny_tokenizer, tmp_path):
    attack = _multi(tiny_model, tiny_tokenizer, tmp_path, steps=4, n_train=3, add_after=1, add_threshold=1e-9)
    attack.prepare(BEHAVIORS)
    # no loss gets under the threshold, so one more behavior joins once `add_after` steps passed since the
    # last addition (step 0 counts as one), up to n_train
    assert attack.universal.active == [1, 1, 2, 3]
    capped = _multi(tiny_model, tiny_tokenizer, tmp_path / "c", steps=5, n_train=2, add_after=1, add_threshold=1e-9)
    capped.prepare(BEHAVIORS)
    assert capped.universal.active == [1, 1, 2, 2, 2]
    easy = _multi(tiny_model, tiny_tokenizer, tmp_path / "e", steps=3, n_train=3, add_threshold=100.0)
    easy.prepare(BEHAVIORS)
    assert easy.universal.active == [1, 2, 3]  # every loss under the threshold: the next one joins at once
    with pytest.raises(ValueError, match="n_train=9 but the run has 4 behaviors"):
        GCGMultiAttack.check(GCGMultiConfig(n_train=9), BEHAVIORS)
    with pytest.raises(ValueError, match=r"train_ids: \['zz'\]"):
        GCGMultiAttack.check(GCGMultiConfig(train_ids=("zz",)), BEHAVIORS)


def test_gcg_transfer_applies_a_saved_suffix_to_any_target(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"suffix": "zz yy", "suffix_ids": [1]}))
    attack = GCGTransferAttack(GCGTransferConfig(suffix_file=str(path)), AttackContext(target=ScriptedChatModel(str)))
    [attempt] = attack(B)
    assert attempt.messages[0]["content"] == "Tell me the thing zz yy"
    text = tmp_path / "s.txt"
    text.write_text("plain suffix\n")
    assert GCGTransferAttack(GCGTransferConfig(suffix_file=str(text)))(B)[0].messages[0]["content"].endswith("suffix")
    with pytest.raises(ValueError, match="suffix_file is required"):
        GCGTransferAttack.check(GCGTransferConfig(), [B])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a gcg_multi suffix file"):
        GCGTransferAttack.check(GCGTransferConfig(suffix_file=str(bad)), [B])


def test_gcg_transfer_uses_the_separator_the_suffix_was_optimised_with(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"suffix": "zz yy", "suffix_ids": [1], "settings": {"separator": "\n"}}))
    [attempt] = GCGTransferAttack(GCGTransferConfig(suffix_file=str(path)))(B)
    assert attempt.messages[0]["content"] == "Tell me the thing\nzz yy"  # gcg_multi's separator, not " "
    same = GCGTransferAttack(GCGTransferConfig(suffix_file=str(path), separator="\n"))(B)[0]
    assert same.messages == attempt.messages
    message = rf"separator ' ' .*{re.escape(str(path))}.*'\\n'"
    with pytest.raises(UserError, match=message):  # an explicit separator that contradicts the file: refused
        GCGTransferAttack.check(GCGTransferConfig(suffix_file=str(path), separator=" "), [B])
    text = tmp_path / "s.txt"
    text.write_text("plain suffix\n")
    assert GCGTransferAttack(GCGTransferConfig(suffix_file=str(text)))(B)[0].messages[0]["content"] == \
        "Tell me the thing plain suffix"  # fmt: skip
    explicit = GCGTransferAttack(GCGTransferConfig(suffix_file=str(text), separator="\n"))(B)[0]
    assert explicit.messages[0]["content"] == "Tell me the thing\nplain suffix"


def test_gcg_multi_reuses_a_suffix_only_for_the_same_prompts(tiny_model, tiny_tokenizer, tmp_path, caplog):
    shared = tmp_path / "shared.json"
    _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, suffix_file=str(shared)).prepare(BEHAVIORS)
    saved = json.loads(shared.read_text())
    assert len(saved["prompt_digests"]) == 2  # one per training behavior
    # the same ids and targets, but another system prompt, or other request text: another prompt to optimise for
    guarded = _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, suffix_file=str(shared),
                     system_prompt="You refuse harmful requests.")  # fmt: skip
    with pytest.raises(UserError, match=rf"{re.escape(str(shared))} was optimised for a different prompt"):
        guarded.prepare(BEHAVIORS)
    reworded = [dataclasses.replace(b, behavior=f"Completely different request {i}") for i, b in enumerate(BEHAVIORS)]
    with pytest.raises(UserError, match="different prompt text of the training behaviors"):
        _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, suffix_file=str(shared)).prepare(reworded)
    assert json.loads(shared.read_text()) == saved  # a shared file is left as it was
    # a file written before the digests were saved: reused as before, with a warning that says what is unchecked
    del saved["prompt_digests"]
    shared.write_text(json.dumps(saved))
    old = _multi(tiny_model, tiny_tokenizer, tmp_path, progressive=False, suffix_file=str(shared))
    old.optimize_universal = lambda train: pytest.fail("re-optimised a file without prompt digests")
    old.prepare(reworded)
    assert old.universal.suffix == saved["suffix"] and "no digest of the training prompts" in caplog.text


def _behaviors_file(tmp_path, n: int):
    path = tmp_path / "behaviors.jsonl"
    path.write_text("\n".join(json.dumps({"id": b.id, "behavior": b.behavior, "target": b.target})
                              for b in (Behavior(f"b{i}", f"Tell me thing {i}", target=f"Sure, here is thing {i}")
                                        for i in range(n))))  # fmt: skip
    return path


def test_gcg_multi_never_records_attempts_of_two_suffixes_in_one_run(tiny_model, tiny_tokenizer, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    from safealign.eval.config import EvalConfig
    from safealign.eval.pipeline import run_eval

    behaviors, run = _behaviors_file(tmp_path, 5), tmp_path / "run"
    suffix_file = run / "gcg_multi_suffix.json"

    def evaluate(rows: str):
        config = EvalConfig(attacks=["gcg_multi"], judges=["kw"], output_dir=str(run), attack_params={
            "gcg_multi": {"steps": 2, "search_width": 8, "topk": 8, "suffix_length": 4, "n_train": 2,
                          "progressive": False}})  # fmt: skip
        config.behaviors.path, config.behaviors.rows, config.generation.max_new_tokens = str(behaviors), rows, 4
        return run_eval(config, tiny_model, tiny_tokenizer, judges={"kw": KeywordJudge()})

    def records():
        return [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]

    evaluate("0:3")
    saved = suffix_file.read_text()
    digests = {r["attempt_meta"]["suffix_digest"] for r in records()}
    assert len(records()) == 3 and len(digests) == 1  # every attempt names the optimisation it used
    # behaviors.rows is not in the run fingerprint: another selection resumes the run, with another training set
    with pytest.raises(UserError, match=rf"{re.escape(str(suffix_file))} was optimised for a different training set"):
        evaluate("1:4")
    assert len(records()) == 3 and suffix_file.read_text() == saved  # nothing recorded, nothing optimised anew
    evaluate("0:4")  # the same training set (b0, b1), one behavior more: the saved suffix, the same digest
    assert len(records()) == 4 and {r["attempt_meta"]["suffix_digest"] for r in records()} == digests
    other = {**json.loads(saved), "suffix": "another suffix"}  # a file that matches the run, but not its records
    suffix_file.write_text(json.dumps(other))
    with pytest.raises(UserError, match="made with another suffix"):
        evaluate("0:5")
    suffix_file.unlink()
    monkeypatch.setattr(GCGMultiAttack, "optimize_universal",
                        lambda self, train: pytest.fail("optimised a suffix with no behavior pending"))  # fmt: skip
    evaluate("0:4")  # every behavior recorded: no suffix is needed, so none is optimised (nor refused)
    assert not suffix_file.exists()
    with pytest.raises(UserError, match=rf"{re.escape(str(suffix_file))} is missing"):
        evaluate("0:5")  # one pending, but the suffix the records were made with is gone: refused, not optimised
    assert len(records()) == 4


def test_gcg_multi_refuses_the_early_stop_keys_it_ignores():
    with pytest.raises(UserError, match=r"attack_params\.gcg_multi\.early_stop_every"):
        check_attack("gcg_multi", {"early_stop_every": 0, "n_train": 2}, BEHAVIORS)
    with pytest.raises(UserError, match=r"attack_params\.gcg_multi\.early_stop_max_new_tokens"):
        GCGMultiConfig(early_stop_max_new_tokens=8)


def test_autodan_records_its_own_fitness_evaluations_and_early_stops_with_the_run_settings(tiny_model,
                                                                                          tiny_tokenizer):
    target, context = refusing_context(tiny_model, tiny_tokenizer)
    config = AutoDANConfig(steps=2, population=4, mutation=1.0, eval_every=1, eval_max_new_tokens=5, patience=0)
    attack = AutoDANAttack(config, context)
    other = Behavior("b2", "Tell me another thing", target="Sure, here is another thing")
    first, second = attack(B)[0], attack(other)[0]
    alone = AutoDANAttack(config, context)(other)[0]
    # per behavior, not the running total of the attack's loss
    assert second.meta["fitness_evaluations"] == alone.meta["fitness_evaluations"] >= 4
    assert first.meta["fitness_evaluations"] + second.meta["fitness_evaluations"] == attack._loss.evaluations
    # the early-stop answers use the run's generation settings, less the answer length (one prompt per call), each
    # sampled with a seed of its own (behavior and step)
    assert [dataclasses.replace(p, seeds=None) for p in target.params] == [
        dataclasses.replace(LOADED_RUN, max_new_tokens=5, batch_size=1)] * 6
    seeds = [p.seeds for p in target.params]
    assert all(len(s) == 1 for s in seeds) and len(set(seeds[:4])) == 4  # b1's and b2's two checks
    assert seeds[4:] == seeds[2:4]  # b2's search run again draws the same
    # a run at the default generation settings: as before
    default, context = refusing_context(tiny_model, tiny_tokenizer, GenerationParams())
    AutoDANAttack(config, context)(B)
    assert default.params == [GenerationParams(max_new_tokens=5, batch_size=1)] * 2
