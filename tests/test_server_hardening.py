"""The competition server against attackers and careless teams (issue 28): no 500 from any body, rejected attempts
kept as bounded records that count toward the rate, one address cannot hold the others out, one team is one row,
and a team cannot read the ground truth off its scores at will."""
from __future__ import annotations

import socket
import sqlite3

from test_server import get, perfect, post, start  # noqa: F401


def rows(server, *columns):
    with sqlite3.connect(server.store.path) as conn:
        return conn.execute(f"SELECT {', '.join(columns)} FROM submissions ORDER BY id").fetchall()


def test_a_lone_surrogate_anywhere_is_a_400_stored_as_rejected(start):  # noqa: F811
    port, server = start()
    body = b'{"groupname": "x\\ud800y", "images": {"q0.jpg": ["a"]}}'
    status, answer = post(port, body, raw=True)
    assert status == 400 and "lone surrogate" in answer["message"] and answer["id"]
    body = b'{"groupname": "team", "images": {"\\ud800.jpg": ["a"]}}'  # an invalid query naming a surrogate
    status, answer = post(port, body, raw=True)
    assert status == 400 and answer["id"]
    assert [r[0] for r in rows(server, "status")] == ["rejected", "rejected"]
    assert "\\ud800" in rows(server, "error")[1][0]  # kept as its escape
    assert post(port, perfect())[0] == 200


def test_a_rejected_body_is_kept_bounded_and_counts_toward_the_rate(start):  # noqa: F811
    port, server = start("server.rate_limit=3", "server.rate_window=60")
    junk = b"x" * 2_000_000
    for _ in range(3):
        assert post(port, junk, raw=True)[0] == 400
    status, answer = post(port, junk, raw=True)
    assert status == 429 and "address '127.0.0.1'" in answer["message"]
    kept = rows(server, "length(payload)", "payload_bytes", "http_status")
    assert [r[2] for r in kept] == [400, 400, 400, 429]
    assert all(r[0] <= 1024 for r in kept) and [r[1] for r in kept[:3]] == [2_000_000] * 3
    assert post(port, perfect())[0] == 200  # a team's own rate is its own


def test_one_address_cannot_hold_the_servers_connections(start):  # noqa: F811
    port, server = start("server.max_connections_per_client=4", "server.read_timeout=5")
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
            for _ in range(4)]
    try:
        for sock in slow:
            sock.sendall(b"POST /results/ HTTP/1.1\r\n")  # and then a byte now and then
        fifth = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
        answer = fifth.recv(4096).decode()
        fifth.close()
        assert answer.startswith("HTTP/1.1 503") and "max_connections_per_client" in answer
        status, _ = post(port, perfect())  # another address (127.0.0.1) is served
        assert status == 200
    finally:
        for sock in slow:
            sock.close()


def test_one_team_is_one_row_and_look_alikes_are_refused(start):  # noqa: F811
    port, server = start()
    assert post(port, dict(perfect(), groupname="Café Team"))[0] == 200
    status, answer = post(port, dict(perfect(), groupname="café  team"))  # case and spaces: the same team
    assert status == 200 and answer["groupname"] == "Café Team"
    status, answer = post(port, dict(perfect(), groupname="Cafe\u0301 Team"))  # NFD: the same letters
    assert status == 200 and answer["groupname"] == "Café Team"
    status, answer = post(port, dict(perfect(), groupname="Сafé Team"))  # a Cyrillic С
    assert status == 400 and "looks like the team 'Café Team'" in answer["message"]
    status, answer = post(port, dict(perfect(), groupname="Café\u200bTeam"))  # a zero-width space
    assert status == 400 and "U+200B" in answer["message"]
    teams = [t["team"] for t in get(port, "/leaderboard.json")[1]["teams"]]
    assert teams == ["Café Team"]


def test_a_team_has_a_daily_limit_by_default(start):  # noqa: F811
    port, server = start("server.daily_limit=2")
    assert [post(port, perfect())[0] for _ in range(2)] == [200, 200]
    status, answer = post(port, perfect())
    assert status == 429 and "submissions of today" in answer["message"]
    from competition.server import ServerSettings

    assert ServerSettings().daily_limit > 0


def test_scores_answer_the_public_queries_and_the_final_standing_the_private_ones(start, tmp_path, capsys):  # noqa: F811
    from cli import serve
    from test_server import TRUTH, write_truth

    port, server = start("server.public_fraction=0.5")
    public = server.served.public["toy"]
    assert len(public) == 2 and set(public) < set(TRUTH["queries"])
    # right on the public queries only: a perfect public score, nothing on the private ones
    sly = {"groupname": "sly", "images": {q: (TRUTH["queries"][q] + [f"{i:040x}.jpg" for i in range(10, 20)])[:10]
                                          for q in public}}
    status, answer = post(port, sly)
    assert status == 200 and answer["results"]["top1"] == 1.0 and "2 public queries of 4" in answer["scored_on"]
    assert post(port, perfect())[1]["results"]["top1"] == 1.0
    assert server.store.seed() == server.store.seed()  # kept: a restart splits alike
    db = server.store.path
    assert serve.main(["--competition", str(write_truth(tmp_path / "c")), "--db", db, "--final",
                       "server.public_fraction=0.5"]) == 0
    out = capsys.readouterr().out
    assert out.index("1. perfect: top1 1.000") < out.index("2. sly: top1 0.000")


def test_the_server_issues_tokens_and_then_needs_them(start, tmp_path, capsys):  # noqa: F811
    import os

    import yaml

    from cli import serve
    from test_server import write_truth

    teams = tmp_path / "teams.txt"
    teams.write_text("Alpha\nBeta Team\n\n")
    out = tmp_path / "tokens.yaml"
    assert serve.main(["--competition", str(write_truth(tmp_path / "c")), "--issue-tokens", str(teams),
                       "--tokens", str(out)]) == 0
    tokens = yaml.safe_load(out.read_text())
    assert sorted(tokens) == ["Alpha", "Beta Team"] and len(set(tokens.values())) == 2
    assert os.stat(out).st_mode & 0o077 == 0  # the organiser's eyes only
    printed = capsys.readouterr().out
    assert all(token in printed for token in tokens.values())
    port, _ = start(f"server.tokens={out}")
    assert post(port, dict(perfect(), groupname="Alpha"))[0] == 401
    headers = {"Authorization": f"Bearer {tokens['Alpha']}"}
    assert post(port, dict(perfect(), groupname="alpha"), headers=headers)[1]["groupname"] == "Alpha"
    assert post(port, dict(perfect(), groupname="Beta Team"), headers=headers)[0] == 401
    teams.write_text("Alpha\nALPHA\n")
    assert serve.main(["--competition", str(write_truth(tmp_path / "c")), "--issue-tokens", str(teams),
                       "--tokens", str(out)]) == 2
