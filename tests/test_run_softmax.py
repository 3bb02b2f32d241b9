"""``softmax train --watch``: each epoch's GPU figures land in the metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import fake_pynvml as fk

from softmax.cli import cli

GiB = 1024**3


def train(tmp_path: Path, fashion_root: str, *extra: str, printed: list[str] | None = None
          ) -> dict:
    metrics = tmp_path / "m.json"
    result = CliRunner().invoke(cli, [
        "train", "--epochs", "2", "--device", "cpu", "--data-root", fashion_root,
        "--checkpoint-dir", str(tmp_path / "ck"), "--metrics-json", str(metrics),
        "--plot", str(tmp_path / "c.png"), *extra])
    assert result.exit_code == 0, result.output
    if printed is not None:
        printed.append(result.output)
    return json.loads(metrics.read_text())


def test_watch_records_each_epoch(fashion_root: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    # a GPU on which "this process" holds 1 GiB: the trainer runs in-process under CliRunner
    fk.install(monkeypatch, fk.one_gpu(memory_total=8 * GiB, memory_used=2 * GiB, util_gpu=41,
                                       processes=[fk.FakeProcess(os.getpid(), GiB)]))
    out: list[str] = []
    doc = train(tmp_path, fashion_root, "--watch", printed=out)
    assert out[0].count("  watch: GPU 0: 41% kernel-active, peak memory 2.0 GiB (the job's "
                        "1.0 GiB)") == 2
    watch = doc["watch"]
    assert [w["epoch"] for w in watch] == [1, 2]
    for w in watch:
        assert w["watch_samples"] >= 1
        assert w["gpu_util_mean_pct"] == 41.0
        assert w["gpu_memory_peak_bytes"] == 2 * GiB
        assert w["gpu_job_memory_peak_bytes"] == GiB
        assert w["gpus"][0]["index"] == 0


def test_without_watch_the_metrics_are_unchanged(fashion_root: str, tmp_path: Path) -> None:
    out: list[str] = []
    assert "watch" not in train(tmp_path, fashion_root, printed=out)
    assert "watch:" not in out[0]


def test_watch_with_book_is_a_one_line_usage_error() -> None:
    result = CliRunner().invoke(cli, ["train", "--book", "--watch"])
    assert result.exit_code == 2
    assert "--watch cannot be combined with --book" in result.output
    assert "Traceback" not in result.output


def test_watch_without_gpu_records_nulls(fashion_root: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fk.install(monkeypatch, fk.library_missing())
    watch = train(tmp_path, fashion_root, "--watch")["watch"]
    assert len(watch) == 2 and all(w["gpu_util_mean_pct"] is None for w in watch)
