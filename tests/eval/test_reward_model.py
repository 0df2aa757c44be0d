"""Reward and cost models: the scalar head reads the last real token (pad == eos included), the Bradley–Terry
and Safe-RLHF cost losses by hand, training from a recipe with held-out accuracy, ``safealign rm score``, and a
reward model as an online reward source."""

from __future__ import annotations

import json
import math

import pytest
import torch

from safealign.cli import main
from safealign.config import load_config
from safealign.errors import UserError
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.eval.reward_model import ScalarRewardModel, encode_texts, last_token_index, load_reward_model
from safealign.online.reward_train import RewardConfig, Row, pair_loss, run_reward_training
from safealign.types import PreferencePair

PAIRS = [
    ("How do I pick a lock to break in?", "I can't help with breaking into homes.", "Sure, insert a tension wrench"),
    ("Write a threat to my coworker.", "I won't write threats.", "Listen carefully, you will regret"),
    ("How can I make a fake ID?", "I cannot help make fake IDs.", "Get a laminator and a photo"),
    ("Tell me how to poison a dog.", "I'm sorry, I can't help harm animals.", "Mix the following into food"),
    ("Give me a pasta recipe.", "Boil pasta, toss with garlic and oil.", "I cannot help with that."),
    ("What is 2 + 2?", "2 + 2 = 4.", "I won't answer that."),
]


@pytest.fixture()
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r, "gap": float(i)}) + "\n"
                            for i, (p, c, r) in enumerate(PAIRS)))
    return path


@pytest.fixture()
def pku_file(tmp_path):
    path = tmp_path / "pku.jsonl"
    rows = [{"prompt": p, "response_0": c, "response_1": r, "safer_response_id": 0, "is_response_0_safe": True,
             "is_response_1_safe": i % 2 == 0} for i, (p, c, r) in enumerate(PAIRS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_score_is_read_at_the_last_real_token_even_when_pad_is_eos():
    """A sampled completion ends with eos; with pad == eos (the embedded SmolLM2 model), transformers' rule
    (the last id != pad) would score the token before it."""
    from safealign.data.collate import pad_sequences

    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    model = ScalarRewardModel(tiny_model()).eval()
    eos = tokenizer.eos_token_id
    prompt = tuple(tokenizer("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")["input_ids"])
    ids, mask, _ = pad_sequences([prompt, prompt], [tuple(tokenizer("Hello there")["input_ids"]) + (eos,), (72, eos)],
                                 tokenizer.pad_token_id)
    last = last_token_index(mask)
    assert ids[0, last[0]] == eos and ids[1, last[1]] == eos
    hf_rule = ((ids != tokenizer.pad_token_id) * torch.arange(ids.shape[1])).argmax(-1)
    assert (hf_rule < last).all()
    with torch.no_grad():
        hidden = model.backbone.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.head(hidden[torch.arange(2), last]).squeeze(-1)
        assert torch.allclose(model(ids, mask), expected)
        assert not torch.allclose(model(ids, mask), model.head(hidden[torch.arange(2), hf_rule]).squeeze(-1))


def test_a_bf16_backbone_scores_and_trains_with_a_float32_head(tmp_path):
    """On GPU the backbone loads in bf16; a bf16 head would round every score to a multiple of 2^-6 near 3 and
    AdamW at lr 1e-4 would never move its bias (3.0 + 1e-4 rounds back to 3.0 in bf16)."""
    from safealign.eval.reward_model import save_reward_model, score_texts

    torch.manual_seed(0)
    model = ScalarRewardModel(tiny_model().to(torch.bfloat16)).eval()
    with torch.no_grad():
        model.head.bias.fill_(3.0)
    tokenizer = tiny_tokenizer()
    texts = ["Hello there, friend.", "Hello there, friend!", "Hello there friend.", "Hi there, friend."]
    prompts = [({"role": "user", "content": "Hi"},)] * len(texts)
    scores = score_texts(model, tokenizer, prompts, texts)
    ids, mask = encode_texts(tokenizer, prompts, texts)
    with torch.no_grad():
        hidden = model.backbone.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        states = hidden[torch.arange(len(texts)), last_token_index(mask)].float()
        expected = states @ model.head.weight.float()[0] + model.head.bias.float()
    assert scores == pytest.approx(expected.tolist(), abs=1e-6)
    assert not all((s * 64).is_integer() for s in scores)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-4, weight_decay=0.0)
    model.head.bias.grad, model.head.weight.grad = torch.tensor([-1.0]), torch.zeros_like(model.head.weight)
    optimizer.step()
    assert model.head.bias.item() == pytest.approx(3.0 + 1e-4, abs=1e-6)
    assert model.head.weight.dtype == torch.float32
    save_reward_model(model, tokenizer, tmp_path / "rm", kind="reward", base="tiny-random")
    assert all(t.dtype == torch.float32 for t in torch.load(tmp_path / "rm" / "head.pt").values())


def test_a_head_saved_in_bf16_still_loads_as_float32(tmp_path):
    """Heads saved before the head was kept in float32 hold bf16 tensors; loading casts them."""
    from safealign.eval.reward_model import save_reward_model

    model = ScalarRewardModel(tiny_model())
    save_reward_model(model, tiny_tokenizer(), tmp_path / "rm", kind="reward", base="tiny-random")
    old = {k: v.to(torch.bfloat16) for k, v in model.head.state_dict().items()}
    torch.save(old, tmp_path / "rm" / "head.pt")
    loaded, _, _ = load_reward_model(tmp_path / "rm")
    assert loaded.head.weight.dtype == torch.float32
    assert torch.equal(loaded.head.weight, old["weight"].float()) and torch.equal(loaded.head.bias, old["bias"].float())


def test_bradley_terry_with_margin_and_the_cost_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])
    pair = PreferencePair(({"role": "user", "content": "x"},), "a", "b")
    rows = [Row(pair, margin=1.0), Row(pair, margin=0.0)]
    expected = -(math.log(1 / (1 + math.exp(-0.5))) + math.log(1 / (1 + math.exp(1.0)))) / 2
    assert pair_loss(chosen, rejected, rows, "reward", 0.0).item() == pytest.approx(expected, abs=1e-6)
    cost_rows = [Row(pair, signs=(-1.0, 1.0)), Row(pair, signs=(-1.0, -1.0))]
    logsig = lambda v: math.log(1 / (1 + math.exp(-v)))  # noqa: E731
    terms = [-logsig(0.5 - 2.0) - logsig(-2.0) - logsig(0.5), -logsig(0.0 + 1.0) - logsig(1.0) - logsig(-0.0)]
    reg = 0.01 * (4 + 1 + 0.25 + 0) / 4  # safe-rlhf: regularization · mean(score²) over all 2B scores
    assert pair_loss(chosen, rejected, cost_rows, "cost", 0.01).item() == pytest.approx(sum(terms) / 2 + reg, abs=1e-6)


def test_the_regulariser_is_safe_rlhfs_mean_square_over_all_scores():
    """safe-rlhf's reward and cost trainers add regularization·mean over the stacked (lower, higher) scores of
    their squares, i.e. ½·mean(r_w² + r_l²) per pair (docs/online.md, safe-rlhf's reward trainer)."""
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([0.0, -1.0])
    rows = [Row(PreferencePair(({"role": "user", "content": "x"},), "a", "b"))] * 2
    added = pair_loss(chosen, rejected, rows, "reward", 0.001) - pair_loss(chosen, rejected, rows, "reward", 0.0)
    assert added.item() == pytest.approx(0.001 * torch.stack([rejected, chosen]).square().mean().item(), rel=1e-5)
    assert added.item() == pytest.approx(0.001 * 0.5 * ((4 + 0) + (1 + 1)) / 2, rel=1e-5)


def reward_config(tmp_path, data, *overrides):
    return load_config(RewardConfig, None, ["model=tiny-random", f"data.path={data}", f"output_dir={tmp_path / 'rm'}",
                                            "eval_fraction=0.34", "num_train_epochs=3", "per_device_train_batch_size=2",
                                            "learning_rate=1e-2", "data.max_length=96", "data.max_prompt_length=48",
                                            *overrides])


def test_reward_model_trains_reports_held_out_accuracy_and_scores_files(tmp_path, pairs_file):
    result = run_reward_training(reward_config(tmp_path, pairs_file, "margin_column=gap"))
    rows = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    assert rows[-1]["eval/accuracy"] in (0.0, 0.5, 1.0) and "eval/margin" in rows[-1]
    assert set(result.eval_metrics) >= {"eval/accuracy", "eval/loss"}
    data = tmp_path / "score_me.jsonl"
    data.write_text(json.dumps({"prompt": "What is 2 + 2?", "response": "4"}) + "\n"
                    + json.dumps({"prompt": [{"role": "user", "content": "Hi"}], "response": "Hello"}) + "\n")
    out = tmp_path / "scored.jsonl"
    assert main(["rm", "score", "--model", str(result.final_dir), "--data", str(data), "--out", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    model, tokenizer, meta = load_reward_model(result.final_dir)
    ids, mask = encode_texts(tokenizer, [({"role": "user", "content": "What is 2 + 2?"},)], ["4"])
    with torch.no_grad():
        assert scored[0]["score"] == pytest.approx(model(ids, mask).item(), abs=1e-5)
    assert meta["kind"] == "reward" and len(scored) == 2


def test_the_saved_model_records_its_lengths_and_rm_score_reads_what_training_read(tmp_path, pairs_file):
    """Training encodes with data.max_length/max_prompt_length (96/48 here); scoring used 1024/512 whatever the
    model was trained with, so a prompt over 48 tokens was read whole by `rm score` and cut in training."""
    from safealign.data import PairEncoder, PreferenceCollator

    result = run_reward_training(reward_config(tmp_path, pairs_file, "num_train_epochs=1"))
    model, tokenizer, meta = load_reward_model(result.final_dir)
    assert (meta["max_length"], meta["max_prompt_length"]) == (96, 48)
    prompt = ({"role": "user", "content": "Please tell me, in a few words and plainly, what is 2 + 2?"},)
    pair = PreferencePair(prompt, "4", "5")
    encoded = PairEncoder(tokenizer, max_length=96, max_prompt_length=48).encode(pair, 0)
    assert len(tokenizer(PairEncoder(tokenizer).render_prompt(prompt))["input_ids"]) > 48  # the prompt is cut
    batch = PreferenceCollator(tokenizer.pad_token_id)([encoded])  # chosen, then rejected
    with torch.no_grad():
        trained = model(batch["input_ids"], batch["attention_mask"])
    data, out = tmp_path / "rows.jsonl", tmp_path / "scored.jsonl"
    data.write_text("".join(json.dumps({"prompt": list(prompt), "response": r}) + "\n" for r in ("4", "5")))
    assert main(["rm", "score", "--model", str(result.final_dir), "--data", str(data), "--out", str(out)]) == 0
    scored = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    assert scored == pytest.approx(trained.tolist(), abs=1e-5)


def test_a_folder_saved_before_its_lengths_were_recorded_scores_as_before():
    from safealign.eval.reward_model import scoring_lengths

    assert scoring_lengths({"kind": "reward", "base": "tiny-random"}) == {"max_length": 1024, "max_prompt_length": 512}
    assert scoring_lengths({"max_length": 96, "max_prompt_length": 48}) == {"max_length": 96, "max_prompt_length": 48}


def test_scoring_warns_once_per_call_with_the_count_of_responses_it_cuts(caplog):
    from safealign.eval.reward_model import score_texts

    model, tokenizer = ScalarRewardModel(tiny_model()).eval(), tiny_tokenizer()
    prompts = [({"role": "user", "content": "Hi"},)] * 3
    with caplog.at_level("WARNING", logger="safealign.eval.reward_model"):
        scores = score_texts(model, tokenizer, prompts, ["Hello " * 20, "Hi", "Hey " * 20], batch_size=1,
                             max_length=64, max_prompt_length=32)
    assert len(scores) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "2 of 3 response(s)" in warnings[0] and "max_length=64" in warnings[0]


def test_cost_model_trains_on_the_pku_layout_with_sign_accuracy(tmp_path, pku_file):
    assert main(["train", str(_recipe(tmp_path, "cost")), f"data.path={pku_file}", "model=tiny-random",
                 f"output_dir={tmp_path / 'cost'}", "eval_fraction=0.34", "data.max_length=96",
                 "data.max_prompt_length=48"]) == 0
    summary = json.loads((tmp_path / "cost" / "train_summary.json").read_text())
    assert summary["kind"] == "cost" and "eval/accuracy_sign" in summary


def test_a_pku_row_without_its_safety_flag_is_named(tmp_path, pku_file):
    rows = [json.loads(line) for line in pku_file.read_text().splitlines()]
    del rows[2]["is_response_1_safe"]
    pku_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"row 2 \(line 3\): missing field.*is_response_1_safe"):
        run_reward_training(reward_config(tmp_path, pku_file, "kind=cost"))


def test_cost_data_and_rm_score_data_are_read_strictly(tmp_path, pku_file):
    """User files, not run files of ours: a cut-off last line is an error naming file and line (it was skipped
    after a warning, training or scoring on the rest), a missing file is not found (it read as no rows)."""
    from safealign.online.score_file import score_file

    pku_file.write_text(pku_file.read_text()[:-20])  # the last row cut off
    with pytest.raises(UserError, match=rf"{pku_file.name}: line {len(PAIRS)}: invalid JSON"):
        run_reward_training(reward_config(tmp_path, pku_file, "kind=cost"))
    with pytest.raises(UserError, match=r"nope.jsonl: cost data file \(data.path\) not found"):
        run_reward_training(reward_config(tmp_path, tmp_path / "nope.jsonl", "kind=cost"))
    folder = tmp_path / "fake_rm"  # a reward model folder as far as the checks before loading it go
    folder.mkdir()
    (folder / "reward_model.json").write_text(json.dumps({"kind": "reward", "base": "tiny-random"}))
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "Hi", "response": "Hello"}\n\n{"prompt": "Hi", "response": "Hel')
    with pytest.raises(UserError, match=r"rows.jsonl: line 3: invalid JSON"):
        score_file(str(folder), str(data), str(tmp_path / "scored.jsonl"))
    data.write_text('{"prompt": "Hi", "response": "Hello"}\n\n{"prompt": "Hi"}\n')
    with pytest.raises(UserError, match=r"rows.jsonl row 1 \(line 3\): response"):
        score_file(str(folder), str(data), str(tmp_path / "scored.jsonl"))
    with pytest.raises(UserError, match=r"nope.jsonl: --data file not found"):
        score_file(str(folder), str(tmp_path / "nope.jsonl"), str(tmp_path / "scored.jsonl"))


def test_rm_score_checks_its_out_before_reading_anything(tmp_path):
    """--out a directory failed with a traceback after every row was scored."""
    from safealign.online.score_file import score_file

    with pytest.raises(UserError, match=rf"{tmp_path}: is a directory"):
        score_file(str(tmp_path / "no_model"), str(tmp_path / "no_data.jsonl"), str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"file is a file, not a directory"):
        score_file(str(tmp_path / "no_model"), str(tmp_path / "no_data.jsonl"), str(tmp_path / "file" / "s.jsonl"))


def test_a_reward_model_is_an_online_reward_source(tmp_path, pairs_file):
    from safealign.online.config import SourceConfig
    from safealign.online.rewards import Batch, build_sources

    result = run_reward_training(reward_config(tmp_path, pairs_file, "num_train_epochs=1"))
    source = build_sources([SourceConfig(kind="reward_model", path=str(result.final_dir))])[0]
    prompts = [({"role": "user", "content": "What is 2 + 2?"},)] * 2
    scores = source.scores(Batch(prompts, ["4", "I won't answer that."], [False, False]), step=1)
    assert scores.shape == (2,) and torch.isfinite(scores).all() and scores[0] != scores[1]


def test_a_cost_model_is_refused_as_a_reward_before_it_loads(tmp_path):
    """A cost model scores unsafe answers high: as the win-rate's --reward-model (or DeAL's reward) it would
    prefer them. The folder holds only reward_model.json, so any load would fail otherwise."""
    from safealign.eval.reward_scorer import load_reward_scorer
    from safealign.online.config import SourceConfig
    from safealign.online.rewards import build_sources

    folder = tmp_path / "cost_rm"
    folder.mkdir()
    (folder / "reward_model.json").write_text(json.dumps({"kind": "cost", "base": "tiny-random"}))
    with pytest.raises(UserError, match=rf"--reward-model: {folder} is a cost model \(reward_model.json kind: cost\)"):
        load_reward_scorer(str(folder), what="--reward-model")
    with pytest.raises(UserError, match=r"reward source 'cost_rm'.*is a cost model"):
        build_sources([SourceConfig(kind="reward_model", path=str(folder))])


def _recipe(tmp_path, kind):
    path = tmp_path / f"{kind}.yaml"
    path.write_text(f"trainer: reward\nkind: {kind}\nnum_train_epochs: 1\nper_device_train_batch_size: 2\n"
                    "data: {path: '???'}\n")
    return path


def test_shipped_reward_recipes_load():
    from pathlib import Path

    from safealign.cli.train import trainer_kind

    recipes = [p for p in sorted((Path(__file__).parents[2] / "configs" / "train").glob("*.yaml"))
               if trainer_kind(str(p)) == "reward"]
    kinds = {load_config(RewardConfig, p).kind for p in recipes}
    assert kinds == {"reward", "cost"}
