"""The peer figure runs end to end, tiny: both servers' rows, both syncs, B's column only
when vdirsyncer is installed. Nothing here is about time; the figure is for the note."""

from __future__ import annotations

from bench import peer_caldav


def test_the_peer_figure_compares_both_servers_first_and_no_change() -> None:
    figures = peer_caldav.measure(events=20, runs=1)
    rows = {(row["server"], row["sync"]): row for row in figures["rows"]}
    assert set(rows) == {
        (server, sync) for server in ("radicale", "xandikos") for sync in ("first", "no-change")
    }
    with_vdirsyncer = peer_caldav.vdirsyncer_command() is not None
    for row in rows.values():
        assert row["mentorpulse_cpu_s"] > 0
        assert row["server_share_wall_s"] > 0
        assert ("cpu_ratio" in row) == with_vdirsyncer
    table = peer_caldav.table(figures)
    assert "radicale" in table
    assert "xandikos" in table
    assert (peer_caldav.VDIRSYNCER_MISSING in table) != with_vdirsyncer
