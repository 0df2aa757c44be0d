"""The shipped seed-method recipes train through ``safealign train`` on tiny-random (docs/seed-methods.md), and
their first logged loss is the value derived by hand for an untrained policy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from safealign.cli import main
from safealign.data import PairEncoder
from safealign.models import load_model
from safealign.models.heads import HEADS_FILE, lm_heads
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.types import PreferencePair

RECIPES = Path(__file__).parents[2] / "configs" / "train"
TINY = ["model=tiny-random", "max_steps=2", "lora.r=2", "lora.alpha=4", "lora.dropout=0.0", "logging_steps=1",
        "data.split=null"]
PAIRS = [("Name a prime.", "7 is prime.", "9 is prime."), ("Say hi.", "Hi there!", "No."),
         ("Add 2 and 2.", "It is 4.", "It is 5, I think."), ("A colour?", "Blue.", "I can't say.")]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(tmp_path: Path, recipe: str, *overrides: str, cache: Path | None = None) -> list[dict]:
    argv = ["train", str(RECIPES / recipe), *TINY, f"output_dir={tmp_path / 'run'}",
            f"reference.cache_dir={cache or tmp_path / 'cache'}", *overrides]
    assert main(argv) == 0
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def first_loss(metrics: list[dict]) -> float:
    return next(m["loss"] for m in metrics if "loss" in m)


def pairs_file(tmp_path: Path, **extra) -> Path:
    rows = [{"prompt": p, "chosen": c, "rejected": r, **{k: v[i] for k, v in extra.items()}}
            for i, (p, c, r) in enumerate(PAIRS)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def test_cut_recipe_trains_and_its_first_loss_is_the_untrained_models_cut_loss(tmp_path):
    from tests.seed.test_cut import ROWS, one_example_loss

    data = write_jsonl(tmp_path / "judged.jsonl", ROWS)
    metrics = train(tmp_path, "cut_judgments.yaml", f"data.path={data}", "per_device_train_batch_size=3")
    expected = sum(one_example_loss(tiny_model().eval(), tiny_tokenizer(), r) for r in ROWS) / len(ROWS)
    assert first_loss(metrics) == pytest.approx(expected, rel=1e-4)
    assert any("cut/flagged_fraction" in m for m in metrics)
    adapter = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["down_proj", "gate_proj", "up_proj"]  # the paper: the MLP only


def test_dckd_recipe_with_the_student_as_teacher_starts_at_kl_zero_and_reuses_its_teacher_cache(tmp_path):
    data = pairs_file(tmp_path)
    args = (f"data.path={data}", "objective.params.teacher=tiny-random", "per_device_train_batch_size=4")
    metrics = train(tmp_path, "dckd_distill.yaml", *args)
    assert first_loss(metrics) == pytest.approx(0.0, abs=1e-5)  # the top-k + remaining-bucket KL of a model to itself
    cached = list((tmp_path / "cache").glob("teacher-*.safetensors"))
    assert len(cached) == 1
    train(tmp_path / "again", "dckd_distill.yaml", *args, cache=tmp_path / "cache")
    assert list((tmp_path / "cache").glob("teacher-*.safetensors")) == cached
    summary = json.loads((tmp_path / "again" / "run" / "train_summary.json").read_text())
    assert "reused" in summary["reference"]


@torch.no_grad()
def mean_chosen_nll() -> float:
    model, tok = tiny_model().eval(), tiny_tokenizer()
    encoder, out = PairEncoder(tok), []
    for p, c, _ in PAIRS:
        prompt = ({"role": "user", "content": p},)
        prompt_ids = tok(encoder.render_prompt(prompt), add_special_tokens=False)["input_ids"]
        response = tok(encoder.render_response(prompt, c), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + response])
        logps = model(input_ids=ids).logits[0].float().log_softmax(-1)
        out.append(-sum(logps[t - 1, ids[0, t]].item() for t in range(len(prompt_ids), ids.shape[1])) / len(response))
    return sum(out) / len(out)


def test_adpa_recipe_with_teacher_equal_to_its_reference_has_no_advantage_only_the_sft_term(tmp_path):
    data = pairs_file(tmp_path)
    metrics = train(tmp_path, "adpa_distill.yaml", f"data.path={data}", "objective.params.teacher=tiny-random",
                    "objective.params.teacher_reference=tiny-random", "per_device_train_batch_size=4",
                    "objective.params.sft_on_chosen=1.0")
    assert first_loss(metrics) == pytest.approx(mean_chosen_nll(), rel=1e-4)


def save_tiny(folder: Path, model) -> str:
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def test_adpa_recipe_with_a_teacher_apart_from_its_reference_starts_at_the_weighted_advantage_and_nll(tmp_path):
    from tests.seed.test_distill import full_distributions, sharp_teacher

    teacher, reference = sharp_teacher(), tiny_model(seed=2).eval()
    vocab = teacher.get_output_embeddings().weight.shape[0]
    data = pairs_file(tmp_path)
    metrics = train(tmp_path, "adpa_distill.yaml", f"data.path={data}", "per_device_train_batch_size=4",
                    f"objective.params.teacher={save_tiny(tmp_path / 'teacher', teacher)}",
                    f"objective.params.teacher_reference={save_tiny(tmp_path / 'reference', reference)}",
                    f"objective.params.top_k={vocab}",  # k = V: the advantage is exact
                    "objective.params.adpa_weight=0.4", "objective.params.sft_on_chosen=1.5")
    tok = tiny_tokenizer()
    encoded, _ = PairEncoder(tok).encode_all([PreferencePair(({"role": "user", "content": p},), c, r)
                                              for p, c, r in PAIRS])
    student = tiny_model().eval()
    rejected = zip(*(full_distributions(m, encoded, 1) for m in (student, teacher, reference)))
    advantage = [-(sp.exp() * (tp - rp)).sum(-1).mean().item() for (sp, _), (tp, _), (rp, _) in rejected]
    nll = [-sp.gather(-1, y[:, None]).mean().item() for sp, y in full_distributions(student, encoded, 0)]
    assert min(abs(a) for a in advantage) > 0.1  # the teacher and its reference disagree
    expected = sum(0.4 * a + 1.5 * n for a, n in zip(advantage, nll)) / len(PAIRS)
    assert first_loss(metrics) == pytest.approx(expected, rel=1e-4)



def padded(model, extra: int = 64):
    """The model with ``extra`` output rows past its tokenizer (as Qwen2.5-7B pads its vocabulary beyond -0.5B's),
    made to draw mass (twice the first rows) so that some land in its top-k."""
    model.resize_token_embeddings(model.config.vocab_size + extra)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[-extra:] = 2.0 * head[:extra]
    return model.eval()


def bucketed_kl(student, teacher, k: int) -> float:
    """KL over the teacher's top-k tokens the student has a row for, plus one bucket for everything else, at one
    position (``student`` ``(V_s,)``, ``teacher`` ``(V_t,)`` log-probs)."""
    inside = [a for a in teacher.topk(k).indices.tolist() if a < student.shape[0]]
    p_t, p_s = teacher.double().exp(), student.double().exp()
    t_rest, s_rest = 1 - sum(p_t[a] for a in inside), 1 - sum(p_s[a] for a in inside)
    return float(sum(p_t[a] * (math.log(p_t[a]) - math.log(p_s[a])) for a in inside)
                 + t_rest * math.log(t_rest / s_rest))


def test_a_teacher_with_a_padded_output_vocabulary_distils_with_its_extra_rows_in_the_remaining_bucket(tmp_path):
    from tests.seed.test_distill import full_distributions

    teacher = padded(tiny_model(seed=1))
    data = pairs_file(tmp_path)
    metrics = train(tmp_path, "dckd_distill.yaml", f"data.path={data}", "per_device_train_batch_size=4",
                    f"objective.params.teacher={save_tiny(tmp_path / 'teacher', teacher)}")  # top_k 16
    encoded, _ = PairEncoder(tiny_tokenizer()).encode_all([PreferencePair(({"role": "user", "content": p},), c, r)
                                                           for p, c, r in PAIRS])
    student, vocab = tiny_model().eval(), tiny_model().config.vocab_size
    per_pair = [0.0] * len(PAIRS)
    for side in (0, 1):
        rows = zip(full_distributions(student, encoded, side), full_distributions(teacher, encoded, side))
        for i, ((sp, _), (tp, _)) in enumerate(rows):
            assert bool((tp.topk(16, dim=-1).indices >= vocab).any())  # padding rows among the teacher's top-k
            per_pair[i] += sum(bucketed_kl(s, t, 16) for s, t in zip(sp, tp)) / sp.shape[0]
    assert first_loss(metrics) == pytest.approx(sum(per_pair) / len(PAIRS), rel=1e-4)


def test_adpa_accepts_a_teacher_and_reference_with_a_padded_output_vocabulary(tmp_path):
    data = pairs_file(tmp_path)
    metrics = train(tmp_path, "adpa_distill.yaml", f"data.path={data}", "per_device_train_batch_size=4",
                    f"objective.params.teacher={save_tiny(tmp_path / 'teacher', padded(tiny_model(seed=1)))}",
                    f"objective.params.teacher_reference={save_tiny(tmp_path / 'ref', padded(tiny_model(seed=2)))}")
    assert math.isfinite(first_loss(metrics))

def test_mah_dpo_recipe_starts_at_log_2_saves_its_heads_and_is_scored_per_head(tmp_path, capsys):
    data = pairs_file(tmp_path, attribute=["harmless", "helpful", "helpful", "harmless"])
    metrics = train(tmp_path, "mah_dpo.yaml", f"data.path={data}", "per_device_train_batch_size=4",
                    "learning_rate=5e-2")
    assert first_loss(metrics) == pytest.approx(math.log(2), abs=1e-4)  # every head starts as the reference
    assert any("head1/accuracy" in m for m in metrics)
    final = tmp_path / "run" / "final"
    assert (final / HEADS_FILE).is_file()
    model, _ = load_model(str(final))
    heads = lm_heads(model)
    assert len(heads) == 2 and not torch.equal(heads[0].weight, heads[1].weight)  # head 1 trained apart
    start = tiny_model().eval()
    assert not torch.equal(heads[0].weight, start.lm_head.weight)  # head 0 trained too (a copy, in the adapter)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), model.disable_adapter():  # its frozen original: the starting model, the reference
        assert torch.allclose(model(input_ids=ids).logits, start(input_ids=ids).logits, atol=1e-5)
    capsys.readouterr()  # training's console log
    assert main(["diagnose", "ranking", "--model", str(final), "--data", str(data), "--heads", "0,1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["heads"] == [0.0, 1.0] and out["head_attributes"] == ["harmless", "helpful"]  # saved by training


def test_mah_dpo_refuses_rows_without_a_listed_attribute_before_loading_a_model(tmp_path, no_model_load):
    data = pairs_file(tmp_path, attribute=["harmless", "funny", "helpful", "harmless"])
    argv = ["train", str(RECIPES / "mah_dpo.yaml"), *TINY, f"data.path={data}", f"output_dir={tmp_path / 'run'}"]
    assert main(argv) == 2


@pytest.mark.parametrize("recipe", ["mah_dpo.yaml", "dckd_distill.yaml"])
def test_seed_objectives_refuse_a_reference_model_they_would_ignore(tmp_path, no_model_load, capsys, recipe):
    data = pairs_file(tmp_path, attribute=["harmless", "helpful", "helpful", "harmless"])
    argv = ["train", str(RECIPES / recipe), *TINY, f"data.path={data}", f"output_dir={tmp_path / 'run'}",
            "reference.model=tiny-random"]
    assert main(argv) == 2
    assert "does not use reference.model" in capsys.readouterr().err


def test_mah_dpo_refuses_several_processes_before_loading_a_model(tmp_path, no_model_load, monkeypatch, capsys):
    data = pairs_file(tmp_path, attribute=["harmless", "helpful", "helpful", "harmless"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["train", str(RECIPES / "mah_dpo.yaml"), *TINY, f"data.path={data}", f"output_dir={tmp_path / 'run'}"]
    assert main(argv) == 2
    assert "never be synchronised" in capsys.readouterr().err


def test_the_seed_objectives_are_listed_with_their_papers_and_data(capsys):
    assert main(["losses", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out) if r["kind"] == "objective"}
    papers = {"cut": "2312.14591", "dckd": "2502.17927", "adpa": "2502.17927", "mah_dpo": "2510.01167"}
    for name, arxiv in papers.items():
        assert arxiv in rows[name]["paper"] and rows[name]["roles"]["data"]
    assert "judgment" in rows["cut"]["roles"]["data"][0] and "attribute" in rows["mah_dpo"]["roles"]["data"][0]


def test_mah_dpo_resume_restores_the_trained_heads_from_the_checkpoint(tmp_path):
    from safetensors.torch import load_file

    data = pairs_file(tmp_path, attribute=["harmless", "helpful", "helpful", "harmless"])
    args = (f"data.path={data}", "per_device_train_batch_size=2", "learning_rate=5e-2", "save_steps=1")
    train(tmp_path, "mah_dpo.yaml", *args)
    saved = load_file(str(tmp_path / "run" / "checkpoint-2" / HEADS_FILE))
    (tmp_path / "run" / "final" / HEADS_FILE).unlink()
    train(tmp_path, "mah_dpo.yaml", *args, "--resume")  # nothing left to train: the heads come from checkpoint-2
    model, _ = load_model(str(tmp_path / "run" / "final"))
    assert torch.equal(lm_heads(model)[1].weight, saved["0.weight"])
    assert not torch.equal(lm_heads(model)[1].weight, lm_heads(model)[0].weight)
    checkpoint, _ = load_model(str(tmp_path / "run" / "checkpoint-2"))  # head 0 comes back with the adapter
    assert torch.equal(lm_heads(model)[0].weight, lm_heads(checkpoint)[0].weight)
    assert not torch.equal(lm_heads(model)[0].weight, tiny_model().lm_head.weight)


def test_mah_dpo_continuing_trained_heads_anchors_each_pair_to_its_own_head(tmp_path):
    """A run that continues a MAH-DPO adapter starts from its trained heads: each pair's reference is the starting
    model through the pair's own head, so at learning rate 0 every head's loss is log 2."""
    data = pairs_file(tmp_path, attribute=["harmless", "helpful", "helpful", "harmless"])
    train(tmp_path / "first", "mah_dpo.yaml", f"data.path={data}", "per_device_train_batch_size=4",
          "learning_rate=5e-2", "max_steps=2")
    final = tmp_path / "first" / "run" / "final"
    model, _ = load_model(str(final))
    assert not torch.equal(lm_heads(model)[0].weight, lm_heads(model)[1].weight)  # the heads disagree now
    metrics = train(tmp_path / "again", "mah_dpo.yaml", f"model={final}", "lora.enabled=false", f"data.path={data}",
                    "per_device_train_batch_size=4", "learning_rate=0")
    row = next(m for m in metrics if "loss" in m)
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert row["head1/dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)  # was: scored against head 0
