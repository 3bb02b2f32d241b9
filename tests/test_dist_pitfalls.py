"""The distributed pitfalls, for real: 2 gloo ranks on the CPU through the lab."""

from __future__ import annotations

import pytest

from devcheck.dist.spawn import first_error, run_ranks
from devcheck.pitfalls import explain, get, lab

CPU_IDS = ["ddp_missing_set_epoch", "ddp_rank_mismatch", "dist_rendezvous_timeout"]


@pytest.fixture(scope="module")
def sweep() -> dict[str, lab.RunResult]:
    ids = [*CPU_IDS, "ddp_load_without_map_location"]
    return {r.id: r for r in lab.run_pitfalls(ids, "cpu", timeout_s=120)}


@pytest.mark.parametrize("pitfall_id", CPU_IDS)
def test_reproduced_with_its_own_symptom_then_fixed(sweep: dict[str, lab.RunResult],
                                                    pitfall_id: str) -> None:
    r = sweep[pitfall_id]
    assert r.status == "passed", r.reason
    assert r.reproduce is not None and get(pitfall_id).matches_symptom(
        r.reproduce.error_text)
    assert r.fixed is not None and r.fixed.value


def test_rendezvous_timeout_is_fast_and_says_who_joined(sweep: dict[str, lab.RunResult]
                                                        ) -> None:
    r = sweep["dist_rendezvous_timeout"].reproduce
    assert r is not None and "1/2 clients joined" in r.message
    assert r.duration_s < 30


def test_rank_mismatch_blames_the_rank_with_the_other_shape(sweep: dict[str, lab.RunResult]
                                                            ) -> None:
    r = sweep["ddp_rank_mismatch"].reproduce
    assert r is not None and "rank 1" in r.message and "[2, 4]" in r.message


def test_load_without_map_location_needs_two_gpus(sweep: dict[str, lab.RunResult]) -> None:
    r = sweep["ddp_load_without_map_location"]
    assert r.status == "skipped" and "cuda" in r.reason


@pytest.mark.requires_cuda
def test_load_without_map_location_on_gpus() -> None:
    r = lab.run_pitfalls(["ddp_load_without_map_location"], "cuda", timeout_s=240)[0]
    if r.status == "skipped":
        pytest.skip(r.reason)
    assert r.status == "passed", r.reason


@pytest.mark.parametrize(("text", "expected"), [
    ("torch.distributed.DistStoreError: Timed out after 1800 seconds waiting for clients. "
     "3/4 clients joined.", "dist_rendezvous_timeout"),
    ("RuntimeError: DDP expects same model across all ranks, but Rank 3 has 10 params, "
     "while rank 0 has inconsistent 12 params.", "ddp_rank_mismatch"),
    ("RuntimeError: rank 3 loaded the checkpoint onto cuda:0, not its own cuda:3: every "
     "rank allocates on GPU 0", "ddp_load_without_map_location"),
    ("raise RendezvousTimeoutError()\ntorch.distributed.elastic.rendezvous.api."
     "RendezvousTimeoutError", "dist_rendezvous_timeout"),
])
def test_explain_recognises_real_messages(text: str, expected: str) -> None:
    assert explain.explain_text(text)[0].id == expected


def _boom(rank: int, world: int) -> None:
    if rank == 1:
        raise ValueError("rank one broke")


def _sleep(rank: int, world: int) -> None:
    import time

    time.sleep(60)


def test_run_ranks_relays_errors_and_kills_on_timeout() -> None:
    out = run_ranks(_boom, 2, timeout_s=60, init=False)
    bad = first_error(out)
    assert bad is not None and bad.rank == 1 and bad.error_text == "ValueError: rank one broke"
    slow = run_ranks(_sleep, 2, timeout_s=1, init=False)
    assert all(o.timed_out for o in slow)
