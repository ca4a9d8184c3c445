"""The agent under pressure, at a small scale (bench/pressure.py runs the full
sizes and prints the figures of docs/security.md): its memory stays bounded, and
what it keeps plus what it counts as lost accounts for everything the load did."""
import os
import sys

import pytest

pytestmark = pytest.mark.kernel
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import pressure  # noqa: E402

BOUND_MIB = 640  # the agent's peak RSS in every load below, with the defaults (64 MiB ring, 16 MiB messages): ~170 MiB idle


def test_forks_are_all_kept():
    r = pressure.forks(1000)
    assert r["status"] == 0 and r["maxrss_mib"] < BOUND_MIB
    lost = pressure.losses(r["stats"])
    full = r["stats"]["kernel"]["ringbuf_full_events"]
    # what was kept is counted from the lines written; the agent's own counters must say the same
    assert r["kept"] == r["stats"]["events"].get("fork", 0) and r["kept_exits"] == r["stats"]["events"].get("exit", 0)
    # every fork is a line or a counted loss; and no more than the tree produced (a fork and an
    # exit per child, a few events of its own) is claimed
    assert 1000 <= r["kept"] + full <= 2 * 1000 + 50, (r["kept"], lost)
    assert r["kept_exits"] >= r["kept"] - full


def test_a_ring_filled_on_purpose_counts_every_loss():
    n = 50_000
    r = pressure.opens(n, "64K")
    k = r["stats"]["kernel"]
    assert r["status"] == 0 and r["maxrss_mib"] < BOUND_MIB
    assert k["ringbuf_full_events"] > 0, "a 64 KiB ring should overflow under 50,000 opens"
    # every open is a line of the file or counted as lost at the ring; and the losses are not
    # over-counted: beyond the 50,000 opens the process has only its start-up's events to lose
    others = sum(r["lines"].get(t, 0) for t in ("open", "exec", "fork", "exit", "connect")) - r["kept"]
    assert n <= r["kept"] + k["ringbuf_full_events"] <= n + others + 200, (r["kept"], k["ringbuf_full_events"], others)
    assert r["lines"]["open"] == r["stats"]["events"]["open"], "the agent's counter and its lines disagree"
    assert r["kept"] > 0


def test_a_huge_response_stays_bounded():
    size = 256 << 20
    r = pressure.response(size)
    assert r["status"] == 0 and r["produced"] > size
    assert r["maxrss_mib"] < BOUND_MIB, r["maxrss_mib"]
    call = r["call"]
    assert call is not None and call["method"] == "tools/call"
    lost = pressure.losses(r["stats"])
    assert lost, "a 256 MiB line is cut somewhere, and counted"


def test_concurrent_http_sessions_are_all_kept():
    r = pressure.sessions(200)
    assert r["produced"] == 200 and r["maxrss_mib"] < BOUND_MIB
    assert r["kept"] == 200, pressure.losses(r["stats"])


def test_a_call_that_opens_many_files_keeps_a_bounded_record():
    """30,000 opens inside one tool call: its record keeps the first 10,000 routine events and
    says how many more there were; the next call's record is its own, exactly attributed."""
    n = 30_000
    r = pressure.call(n)
    assert r["maxrss_mib"] < BOUND_MIB
    big, small = r["calls"]
    f, g = r["files"]
    assert len(big["timeline"]) <= 10_000 + 10 and r["kept"] >= 9_000
    assert any("more events of this call are not in its timeline" in x for x in big["notes"]), big["notes"]
    assert all(e["attribution"] == "exact" for e in big["timeline"])
    mine = [e for e in small["timeline"] if e["type"] == "open"]
    assert any(e.get("path") == g for e in mine) and not any(e.get("path") == f for e in mine)
    assert all(e["attribution"] == "exact" for e in small["timeline"])
    assert r["stats"]["calls"]["events_not_in_records"] >= n - 10_000
