"""``explain`` on real error texts people pasted in public issue threads.

tests/data/explain/corpus/ holds one text per file, named ``<expected id>__NN.txt`` (or
``negative__NN.txt`` for unrelated errors), with ``# source: URL`` on the first line and the
text as it was pasted below it. Top-1 accuracy on device errors must stay >= 95%, and no
negative may match anything; the numbers are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from devcheck.pitfalls import REGISTRY
from devcheck.pitfalls.explain import explain_text

CORPUS = Path(__file__).parent / "data" / "explain" / "corpus"
NEW_IDS = ("cuda_out_of_memory", "cudnn_error", "cublas_error", "nccl_error",
           "illegal_memory_access", "cuda_unknown_error", "mps_float64", "mps_out_of_memory",
           "mps_op_not_implemented", "default_device_not_applied")


def _entries() -> list[tuple[str, str, str]]:
    """(file name, expected id or 'negative', text without the source line)."""
    out = []
    for path in sorted(CORPUS.glob("*.txt")):
        first, _, text = path.read_text(encoding="utf-8").partition("\n")
        out.append((path.name, path.name.split("__")[0], text))
    return out


ENTRIES = _entries()


def test_corpus_is_real_and_large_enough() -> None:
    kinds = Counter(expected for _, expected, _ in ENTRIES)
    assert sum(n for k, n in kinds.items() if k != "negative") >= 60
    assert kinds["negative"] >= 10
    for pid in NEW_IDS:
        assert kinds[pid] >= 3, f"only {kinds[pid]} real texts for {pid}"
    for path in sorted(CORPUS.glob("*.txt")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# source: https://"), path.name
    for _, expected, _ in ENTRIES:
        assert expected == "negative" or expected in REGISTRY, expected


def test_top1_accuracy_and_no_false_positives() -> None:
    hits, misses, false_pos = 0, [], []
    for name, expected, text in ENTRIES:
        matches = explain_text(text)
        got = matches[0].id if matches else None
        if expected == "negative":
            if matches:
                false_pos.append(f"{name}: matched {got}")
        elif got == expected:
            hits += 1
        else:
            misses.append(f"{name}: got {got}")
    devices = sum(1 for _, e, _ in ENTRIES if e != "negative")
    negatives = len(ENTRIES) - devices
    print(f"\nexplain corpus: top-1 {hits}/{devices} = {hits / devices:.1%} on device errors; "
          f"{len(false_pos)}/{negatives} negatives matched")
    for line in misses + false_pos:
        print("  " + line)
    assert not false_pos, false_pos
    assert hits / devices >= 0.95, misses


@pytest.mark.parametrize("pid", NEW_IDS)
def test_each_new_pitfall_matches_its_own_real_texts(pid: str) -> None:
    texts = [(n, t) for n, e, t in ENTRIES if e == pid]
    wrong = [n for n, t in texts if not explain_text(t) or explain_text(t)[0].id != pid]
    assert len(wrong) <= len(texts) // 4, wrong
