"""Processes sharing a reference cache (sweep workers) compute an entry once: the others wait and read it back."""

from __future__ import annotations

import threading
import time

import torch

from safealign.data import PairEncoder
from safealign.data.formats import load_preferences
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train import reference


def test_two_workers_asking_for_one_entry_compute_it_once(pairs_file, tmp_path, monkeypatch):
    items, _ = PairEncoder(tiny_tokenizer()).encode_all(load_preferences(str(pairs_file)).items)
    model = tiny_model()
    compute = reference.compute_reference_columns
    calls = []

    def slow_compute(*args, **kwargs):  # long enough for the second worker to find the entry missing
        calls.append(threading.get_ident())
        time.sleep(0.5)
        return compute(*args, **kwargs)

    monkeypatch.setattr(reference, "compute_reference_columns", slow_compute)
    monkeypatch.setattr("safealign.io.lockfile.POLL_SECONDS", 0.05)
    results = {}

    def worker(name):
        results[name] = reference.load_or_compute_reference(model, items, tmp_path)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
        time.sleep(0.1)  # b asks while a is computing
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and sorted(r.reused for r in results.values()) == [False, True]
    assert torch.equal(results["a"].table, results["b"].table)
    assert not list(tmp_path.glob("*.lock"))  # released
