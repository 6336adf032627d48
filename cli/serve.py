"""The competition server (competition/server.py): scores submissions against ground truth, keeps
every one in SQLite, and shows a leaderboard. Compatible with the original course server.

    facematch serve --competition data/competition                      # loopback, port 3001
    facematch serve --competition a/ground_truth.json --competition b/ --port 8000 --tokens teams.yaml
    facematch serve --competition data/competition --issue-tokens teams.txt --tokens teams.yaml   # then serve
    facematch serve --competition data/competition --final              # the final standing, on the private queries
"""
from __future__ import annotations

import argparse
import signal
import sqlite3
import sys

from pathlib import Path

from competition.rules import SCORES, GroundTruthError
from competition.server import __doc__ as SERVER_DOC
from competition.server import ServerSettings, load_competitions, make_server
from competition.submissions import SubmissionStore, issue_tokens
from settings import check_config, run_command
from utils import ConfigError, get_logger

log = get_logger("facematch.server")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--competition", action="append", default=[], required=True,
                        help="a ground_truth.json (or the folder holding it); repeat for more; the first is the default")
    parser.add_argument("--host", help="address to listen on (server.host, default 127.0.0.1; beyond loopback only "
                        "with --tokens)")
    parser.add_argument("--port", type=int, help="port (server.port, default 3001)")
    parser.add_argument("--db", help="SQLite database (server.db)")
    parser.add_argument("--tokens", help="YAML file of 'team: token' lines (server.tokens)")
    parser.add_argument("--issue-tokens", metavar="TEAMS", help="a text file of team names, one a line: write a new "
                        "random token for each into --tokens (readable by you only), print them, and exit")
    parser.add_argument("--final", action="store_true",
                        help="print each competition's final standing (server.public_fraction < 1: every team's best "
                             "public submission scored on the private queries) from the database, and exit")


def serve_competition(args: argparse.Namespace) -> int:
    cfg = args.cfg
    for key in ("host", "port", "db", "tokens"):
        if getattr(args, key) is not None:
            cfg["server"][key] = getattr(args, key)
    check_config(cfg)  # the flags obey config/schema.yaml as the overrides do
    settings = ServerSettings(**cfg["server"])
    if args.issue_tokens:
        if not args.tokens:
            args.parser.error("--issue-tokens needs --tokens FILE to write them to")
        try:
            teams = Path(args.issue_tokens).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the team names {args.issue_tokens}: {exc.strerror}") from None
        for team, token in issue_tokens(teams, args.tokens).items():
            print(f"{team}: {token}")
        print(f"wrote {args.tokens} (readable by you only): serve with --tokens {args.tokens}; send each team its "
              "token, which it puts in submit.token", flush=True)
        return 0
    competitions = load_competitions(args.competition)
    if args.final:
        store = SubmissionStore(settings.db)
        for name in competitions:
            print(f"{name}: final standing (each team's best public submission, on the private queries)")
            for i, t in enumerate(store.final_standing(name), 1):
                print(f"  {i}. {t['team']}: " + ", ".join(f"{k} {t['private'][k]:.3f}" for k in SCORES) +
                      f" (public top1 {t['public']['top1']:.3f}, submission {t['submission']})")
        return 0
    server = make_server(settings, competitions)

    def stop(signum, frame):
        server.shutdown(wait=False)

    # uvicorn takes SIGINT/SIGTERM while it serves, then restores these and raises the signal
    # again: stop() makes that a no-op, where Python's defaults would end the process with it
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    served = server.served
    names = ", ".join(f"{n} ({len(gt['queries'])} queries)" for n, gt in served.competitions.items())
    print(f"facematch server on {server.url()}/ (POST /results/ scores '{served.default}'); "
          f"competitions: {names}; database {served.settings.db}", flush=True)
    server.serve_forever()
    print("facematch server stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(SERVER_DOC, arguments, serve_competition, argv, prog="facematch serve", errors=(GroundTruthError, sqlite3.Error))


if __name__ == "__main__":
    sys.exit(main())
