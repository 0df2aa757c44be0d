"""REAL pair selection (docs/seed-methods.md): cosine of mean-pooled, normalised last-layer embeddings of a
pair's two responses; the most dissimilar fraction is kept and trains through the shipped recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safealign.cli import main
from safealign.data.select import select_pairs
from safealign.errors import UserError
from safealign.models.tiny import tiny_model, tiny_tokenizer

RECIPE = Path(__file__).parents[2] / "configs" / "train" / "real_dpo_hh.yaml"
ROWS = [
    {"prompt": "How do I pick a lock?", "chosen": "I can't help with that.", "rejected": "Insert a tension wrench."},
    {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5."},
    {"prompt": "Name a prime.", "chosen": "7 is prime.", "rejected": "Sorry, I can't answer that question."},
    {"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "Hi there"},
    {"prompt": "A colour?", "chosen": "Blue.", "rejected": "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"},
    {"prompt": "A fruit?", "chosen": "An apple.", "rejected": "An apple!"},
]


def test_selection_by_hand():
    sims = [0.9, 0.1, 0.5, 0.1, 0.7]
    assert select_pairs(sims, 0.4) == [1, 3]  # the two lowest; the tie kept by position
    assert select_pairs(sims, 0.2) == [1]  # a tie straddling the cut: the earlier pair is kept
    assert select_pairs(sims, 0.4, keep="hard") == [0, 4]
    tied = [0.2, 0.8, 0.5, 0.8, 0.2, 0.8]
    assert select_pairs(tied, 2 / 6, keep="hard") == [1, 3]  # three tied at the top, two kept: the earlier two
    assert select_pairs(tied, 4 / 6, keep="hard") == [1, 2, 3, 5]
    assert select_pairs([0.5, 0.3, 0.3, 0.3], 0.5) == [1, 2]  # three tied at the bottom, two kept
    assert select_pairs(sims, 0.6, keep="easy") == [1, 2, 3]
    assert len(select_pairs(sims, 0.4, keep="random", seed=3)) == 2
    assert select_pairs(sims, 0.4, keep="random", seed=3) == select_pairs(sims, 0.4, keep="random", seed=3)
    assert select_pairs([0.3], 0.01) == [0]  # at least one pair
    with pytest.raises(UserError, match="fraction"):
        select_pairs(sims, 0)
    with pytest.raises(UserError, match="pair 1"):
        select_pairs([0.1, float("nan")], 0.5)


@torch.no_grad()
def brute_force_cosine(text_a: str, text_b: str) -> float:
    """One response at a time, no padding: mean of the last hidden layer, normalised, dot product."""
    model, tok = tiny_model().eval(), tiny_tokenizer()
    vecs = []
    for text in (text_a, text_b):
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        vecs.append(torch.nn.functional.normalize(hidden.mean(0), dim=0))
    return float(vecs[0] @ vecs[1])


def test_cli_keeps_the_most_dissimilar_half_with_labels_unchanged_and_the_recipe_trains_on_it(tmp_path):
    data, out = tmp_path / "pairs.jsonl", tmp_path / "real.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    argv = ["data", "select", str(data), "--method", "real", "--model", "tiny-random", "--out", str(out),
            "--fraction", "0.5", "--batch-size", "4"]
    assert main(argv) == 0
    expected = [brute_force_cosine(r["chosen"], r["rejected"]) for r in ROWS]
    lowest = sorted(range(len(ROWS)), key=lambda i: expected[i])[:3]
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [k["prompt"] for k in kept] == [ROWS[i]["prompt"] for i in sorted(lowest)]
    for row in kept:
        source = next(r for r in ROWS if r["prompt"] == row["prompt"])
        assert (row["chosen"], row["rejected"]) == (source["chosen"], source["rejected"])  # orientation: labels
        assert row["real_similarity"] == pytest.approx(expected[ROWS.index(source)], abs=1e-4)
    stats = json.loads((tmp_path / "real.jsonl.stats.json").read_text())
    assert stats["pairs"] == 6 and stats["kept"] == 3
    assert stats["threshold"] == pytest.approx(max(expected[i] for i in lowest), abs=1e-4)

    argv = ["train", str(RECIPE), "model=tiny-random", f"data.path={out}", "data.split=null",
            f"output_dir={tmp_path / 'run'}", "max_steps=1", "lora.r=2", "lora.alpha=4",
            "per_device_train_batch_size=2", f"reference.cache_dir={tmp_path / 'cache'}"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["examples"] == 3 and summary["steps"] == 1


@pytest.mark.parametrize("option, value", [("--max-length", "0"), ("--max-length", "-3"), ("--batch-size", "0")])
def test_cli_refuses_a_length_or_batch_size_below_1_naming_the_option(tmp_path, capsys, option, value):
    """--max-length 0 made every response a zero vector (every cosine 0, the first rows kept), -3 dropped the last 3
    tokens of each response, and --batch-size 0 crashed with a traceback."""
    data, out = tmp_path / "pairs.jsonl", tmp_path / "real.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    argv = ["data", "select", str(data), "--model", "tiny-random", "--out", str(out), option, value]
    assert main(argv) == 2
    assert f"{option} must be >= 1, got {value}" in capsys.readouterr().err
    assert not out.exists()


def test_embedding_refuses_a_length_or_batch_size_below_1():
    from safealign.train.embed import embed_texts

    for bad in ({"max_length": 0}, {"max_length": -3}, {"batch_size": 0}):
        with pytest.raises(UserError, match="max_length and batch_size >= 1"):
            embed_texts(tiny_model(), tiny_tokenizer(), ["Hi there!"], **bad)


def test_the_methods_listing_names_real_with_its_paper(capsys):
    assert main(["losses"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "REAL" in ln)
    assert "data select --method real" in line and "2409.17169" in line
