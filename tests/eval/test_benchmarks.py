"""Behavior selection: categories, id ranges, rows, seeded sampling, limit; the shared AdvBench file."""

from __future__ import annotations

import pytest

from safealign.eval.benchmarks import load_benchmark, parse_rows, select_behaviors
from safealign.eval.config import BehaviorsConfig
from safealign.types import Behavior

BS = [Behavior(f"x_{i}", f"b{i}", category="a" if i % 2 else "b") for i in range(1, 11)]


def ids(behaviors):
    return [b.id for b in behaviors]


def test_filters_compose_in_order():
    assert ids(select_behaviors(BS, categories=["a"])) == ["x_1", "x_3", "x_5", "x_7", "x_9"]
    assert ids(select_behaviors(BS, ids=["x_3..x_5", "x_9"])) == ["x_3", "x_4", "x_5", "x_9"]
    assert ids(select_behaviors(BS, rows="0:2,8:")) == ["x_1", "x_2", "x_9", "x_10"]
    assert ids(select_behaviors(BS, categories=["a"], limit=2)) == ["x_1", "x_3"]
    assert parse_rows("3", 10) == {3} and parse_rows("-1,0", 10) == {9, 0}
    assert ids(select_behaviors(BS, categories=["a"], rows="1,-1")) == ["x_3", "x_9"]  # among the filtered ones


def test_sampling_is_seeded_and_keeps_file_order():
    first = ids(select_behaviors(BS, sample=4, seed=7))
    assert first == ids(select_behaviors(BS, sample=4, seed=7)) and len(first) == 4
    assert first == sorted(first, key=lambda i: int(i.split("_")[1]))
    assert any(ids(select_behaviors(BS, sample=4, seed=s)) != first for s in range(3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"categories": ["c"]}, r"unknown behavior categories \['c'\]; present: 'a', 'b'"),
        ({"ids": ["x_99"]}, "unknown behavior id 'x_99'"),
        ({"ids": ["x_1..y_3"]}, "same prefix"),
        ({"rows": "a:b"}, "behaviors.rows: cannot parse 'a:b'"),
        ({"rows": "0:2,10"}, r"behaviors.rows: '10' selects no behavior: positions run 0..9 \(10 behaviors left"),
        ({"rows": "-11"}, r"behaviors.rows: '-11' selects no behavior"),
        ({"rows": "20:30"}, r"behaviors.rows: '20:30' selects no behavior"),
        ({"categories": ["a"], "rows": "5"}, r"'5' selects no behavior: positions run 0..4 \(5 behaviors left"),
    ],
)
def test_bad_filters_say_what_is_valid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_behaviors(BS, **kwargs)


def test_advbench_from_shared_data(shared_data):
    config = BehaviorsConfig(path=str(shared_data / "advbench_behaviors.csv"),
                             targets=str(shared_data / "advbench_targets.json"), limit=50)  # fmt: skip
    behaviors = load_benchmark(config)
    assert len(behaviors) == 50 and behaviors[0].id == "advbench_1" and behaviors[-1].id == "advbench_50"
    assert all(b.target.startswith("Sure, here") for b in behaviors)
    with pytest.raises(ValueError, match="behaviors.path is not set"):
        load_benchmark(BehaviorsConfig())


def test_zero_padded_id_ranges_keep_their_width_and_a_range_matching_nothing_fails():
    sst = [Behavior(f"sst_{i:03d}", f"b{i}") for i in range(1, 12)]
    assert ids(select_behaviors(sst, ids=["sst_001..sst_003"])) == ["sst_001", "sst_002", "sst_003"]
    assert ids(select_behaviors(sst, ids=["sst_009..sst_011"])) == ["sst_009", "sst_010", "sst_011"]
    with pytest.raises(ValueError, match=r"id range 'x_20..x_30' matches no behavior id \(ids here look like "
                                         r"'x_1', 'x_2', 'x_3'\)"):
        select_behaviors(BS, ids=["x_20..x_30"])


def test_a_missing_behaviors_or_benign_file_names_the_key_that_set_it(tmp_path, monkeypatch):
    """It said only "x.csv: no such file": the key, and that a relative path is read from the current directory,
    tell where to look."""
    from safealign.errors import UserError
    from safealign.eval.benign import benign_set
    from safealign.eval.config import EvalConfig
    from safealign.pipelines.demo import prompt_sets
    from safealign.pipelines.demo_config import DemoConfig

    monkeypatch.chdir(tmp_path)
    where = f"a relative path is read from the current directory, {tmp_path}"
    with pytest.raises(UserError, match=rf"^x\.csv: no such file \(behaviors\.path; {where}\)"):
        load_benchmark(BehaviorsConfig(path="x.csv"))
    config = EvalConfig()
    config.benign.path = "benign.jsonl"
    with pytest.raises(UserError, match=rf"^benign\.jsonl: no such file \(benign\.path; {where}\)"):
        benign_set(config, None)
    for key in ("extra_harmful", "extra_benign"):
        with pytest.raises(UserError, match=rf"^data/extra\.csv: no such file \({key}; {where}\)"):
            prompt_sets(DemoConfig(**{key: ["data/extra.csv"]}))
