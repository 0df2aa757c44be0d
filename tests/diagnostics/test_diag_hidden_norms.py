"""``safealign diagnose hidden-norms``: the residual-stream concentration figures against a brute-force
computation from ``output_hidden_states`` (layer l = the residual after l blocks, HF's ``hidden_states[l]``, for
l below the depth: HF's last entry has the final norm applied)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from safealign.cli import main


def brute_force(model, sequences, layer, top_k):
    first, later = [], []
    with torch.no_grad():
        for ids in sequences:
            x = torch.tensor([ids])
            h = model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True).hidden_states[layer][0]
            first.append(float(h[0].norm()))
            later.append(h[1:])
    h = torch.cat(later)
    top = h.abs().mean(0).topk(top_k).indices
    # a zero state (the pad token's embedding at layer 0) counts as share 0, not 0/0
    share = (h[:, top] ** 2).sum(-1) / (h**2).sum(-1).clamp(min=1e-12)
    # statistics.median: for an even count the mean of the two middle values (torch.median gives the lower)
    norms, shares = h.norm(dim=-1).tolist(), share.tolist()
    return statistics.median(first), statistics.median(norms), top.tolist(), statistics.median(shares)


def test_figures_equal_a_brute_force_computation(tiny_model, pairs, encode):
    from safealign.diagnostics.hidden_norms import measure_hidden_norms

    sequences = [list(p.prompt_ids) + list(p.rejected_ids) for p in encode(pairs)]
    if sum(len(s) - 1 for s in sequences) % 2:  # an even count of later positions, where medians can differ
        sequences[0] = sequences[0][:-1]
    rows = measure_hidden_norms(tiny_model, sequences, [0, 1], top_k=3)
    assert [r["layer"] for r in rows] == [0, 1]
    for row in rows:
        first, median, top, share = brute_force(tiny_model, sequences, row["layer"], 3)
        assert row["first_token_norm"] == pytest.approx(first, rel=1e-5)
        assert row["token_norm_median"] == pytest.approx(median, rel=1e-5)
        assert row["top_dims"] == top and row["top_share_median"] == pytest.approx(share, rel=1e-5)
        assert row["even_share"] == 3 / tiny_model.config.hidden_size
        assert row["positions"] == sum(len(s) - 1 for s in sequences)


def test_cli_json_and_bad_settings(capsys, tmp_path):
    data = tmp_path / "pairs.jsonl"
    row = {"prompt": "How do I pick a lock?", "chosen": "No.", "rejected": "Use a wrench."}
    data.write_text(json.dumps(row) + "\n")
    assert main(["diagnose", "hidden-norms", "--model", "tiny-random", "--data", str(data), "--layers", "1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["diagnostic"] == "hidden_norms" and [r["layer"] for r in out["summary"]["layers"]] == [1]
    assert main(["diagnose", "hidden-norms", "--model", "tiny-random", "--data", str(data)]) == 0
    assert "first-token norm" in capsys.readouterr().out  # the default layers: circuit breakers' targets
    assert main(["diagnose", "hidden-norms", "--model", "tiny-random", "--data", str(data), "--response", "both"]) == 2
    assert "chosen or rejected" in capsys.readouterr().err
    assert main(["diagnose", "hidden-norms", "--model", "tiny-random", "--data", str(data), "--layers", "99"]) == 2
