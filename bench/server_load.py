"""Load test of server.py on loopback, and a kill-and-restart durability check.

    .venv/bin/python bench/server_load.py --processes 4 --per-process 50 --queries 1000 --repeats 3
    .venv/bin/python bench/server_load.py --baseline 59b64b1     # and the server.py of that commit

Load: a synthetic competition of --queries queries (gallery 5 × as many names); --processes client
processes each send --per-process submissions of --queries × 10 names, one after another, over a
fresh connection each. Reports throughput and p50/p99 latency (median over --repeats runs).
Durability: clients keep submitting while the server is SIGKILLed mid-stream; after a restart,
every acknowledged submission id must be in the database (and the leaderboard served again).
With --baseline REV, the server.py of git revision REV (extracted with git archive) is measured
too, its runs alternating with this tree's, and the table gives the ratio this tree / REV.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import git_rev, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_competition(folder: Path, n_queries: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    gallery = [f"{rng.getrandbits(160):040x}.jpg" for _ in range(5 * n_queries)]
    queries = {f"{rng.getrandbits(160):040x}.jpg": rng.sample(gallery, 3) for _ in range(n_queries)}
    truth = {"name": "load", "queries": queries, "gallery": gallery}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ground_truth.json").write_text(json.dumps(truth))
    return truth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def extract(rev: str, folder: Path) -> Path:
    """The tree of git revision `rev`, written to `folder` (git archive): its server can run there."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def start_server(truth_dir: Path, db: Path, port: int, root: Path = ROOT) -> subprocess.Popen:
    # `facematch serve` (cli/serve.py) here; a revision from before it had server.py at the top
    command = [str(root / "server.py")] if (root / "server.py").exists() else ["-m", "cli.serve"]
    # a load test is no team probing the answers: no daily limits, per team or per client (all of loopback is one)
    unlimited = ["server.daily_limit=0", "server.daily_limit_per_client=0",
                 "server.new_teams_per_client=0"] if root == ROOT else []
    proc = subprocess.Popen([sys.executable, *command, "--competition", str(truth_dir),
                             "--port", str(port), "--db", str(db), *unlimited], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if "server on" not in proc.stdout.readline():
        raise SystemExit("server did not start")
    return proc


def body_for(truth: dict, team: str, rng: random.Random) -> bytes:
    gallery = truth["gallery"]
    images = {q: (good[:1] + rng.sample(gallery, 9)) if rng.random() < 0.5 else rng.sample(gallery, 10)
              for q, good in truth["queries"].items()}
    images = {q: list(dict.fromkeys(v))[:10] for q, v in images.items()}
    return json.dumps({"groupname": team, "images": images}).encode()


def post(port: int, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/results/", body=body, headers={"Content-Length": str(len(body))})
    answer = conn.getresponse()
    status, data = answer.status, json.loads(answer.read())
    conn.close()
    return status, data


def client(args) -> list[tuple[float, int, int | None]]:
    """Send `count` submissions (or until the server goes away); returns (latency, status, id) each."""
    port, truth_path, team, count, seed = args
    truth = json.loads(Path(truth_path).read_text())
    rng = random.Random(seed)
    bodies = [body_for(truth, team, rng) for _ in range(min(count, 5))]
    out = []
    for i in range(count):
        started = time.perf_counter()
        try:
            status, data = post(port, bodies[i % len(bodies)])
        except (OSError, http.client.HTTPException, ValueError):  # refused, reset, or an answer cut off
            out.append((time.perf_counter() - started, -1, None))
            break
        out.append((time.perf_counter() - started, status, data.get("id")))
    return out


def load_run(truth_dir: Path, processes: int, per_process: int, root: Path = ROOT) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(truth_dir, Path(tmp) / "load.db", port, root)
        try:
            jobs = [(port, str(truth_dir / "ground_truth.json"), f"team{i}", per_process, i) for i in range(processes)]
            with mp.Pool(processes) as pool:
                started = time.perf_counter()
                results = pool.map(client, jobs)
                wall = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        stored = sqlite3.connect(Path(tmp) / "load.db").execute(
            "SELECT COUNT(*) FROM submissions WHERE status='scored'").fetchone()[0]
    flat = [r for rs in results for r in rs]
    lat = sorted(r[0] for r in flat)
    ok = sum(1 for r in flat if r[1] == 200)
    return {"sent": len(flat), "ok": ok, "stored": stored, "wall": wall, "throughput": ok / wall,
            "p50": lat[len(lat) // 2] * 1000, "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}


def kill_run(truth_dir: Path, processes: int, kill_after: float, root: Path = ROOT) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "kill.db"
        port = free_port()
        proc = start_server(truth_dir, db, port, root)
        jobs = [(port, str(truth_dir / "ground_truth.json"), f"team{i}", 10_000, i) for i in range(processes)]
        with mp.Pool(processes) as pool:
            pending = pool.map_async(client, jobs)
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            results = pending.get(timeout=120)
        acked = {r[2] for rs in results for r in rs if r[1] == 200}
        proc = start_server(truth_dir, db, port, root)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/leaderboard.json")
            teams = json.loads(conn.getresponse().read())["teams"]
            conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        stored = {r[0] for r in sqlite3.connect(db).execute("SELECT id FROM submissions WHERE status='scored'")}
    return {"acknowledged": len(acked), "stored": len(stored), "lost": len(acked - stored),
            "unacknowledged_stored": len(stored - acked), "leaderboard_submissions": sum(t["submissions"] for t in teams)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--per-process", type=int, default=50)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kill-after", type=float, default=3.0, help="seconds of load before SIGKILL")
    parser.add_argument("--baseline", help="a git revision whose server.py is measured too, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        impls = {"this tree": ROOT}
        if args.baseline:
            rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()
            impls = {f"baseline {rev}": extract(rev, Path(tmp) / "baseline"), **impls}
        truth_dir = Path(tmp) / "comp"
        truth = make_competition(truth_dir, args.queries)
        size = len(body_for(truth, "team0", random.Random(0)))
        runs = {name: [] for name in impls}
        kills = {name: [] for name in impls}
        for i in range(args.repeats):  # alternating, so both see the same machine
            for name, root in impls.items():
                runs[name].append(load_run(truth_dir, args.processes, args.per_process, root))
                print(f"{name}: load run {i + 1}: {runs[name][-1]}", flush=True)
        for i in range(args.repeats):
            for name, root in impls.items():
                kills[name].append(kill_run(truth_dir, args.processes, args.kill_after, root))
                print(f"{name}: kill run {i + 1}: {kills[name][-1]}", flush=True)
    md = report(args, size, runs, kills)
    write_section("server-load", md)
    print(md)


def report(args, size: int, runs: dict[str, list[dict]], kills: dict[str, list[dict]]) -> str:
    """The RESULTS.md section: the load table (one column per server, and their ratio) and the kill runs."""
    names = list(runs)

    def med(name, key):
        return statistics.median(r[key] for r in runs[name])

    rows = [("submissions answered 200", "ok", "{:.0f}"), ("stored in the database", "stored", "{:.0f}"),
            ("throughput (submissions/s)", "throughput", "**{:.1f}**"), ("latency p50 (ms)", "p50", "**{:.0f}**"),
            ("latency p99 (ms)", "p99", "**{:.0f}**")]
    head = "| | " + " | ".join(f"{n}: median of {args.repeats} | runs" for n in names)
    head += " | ratio |" if len(names) == 2 else " |"
    lines = [head, "|---|" + "---|---|" * len(names) + ("---|" if len(names) == 2 else "")]
    for label, key, fmt in rows:
        cells = [f"{fmt.format(med(n, key))} | {', '.join(fmt.strip('*').format(r[key]) for r in runs[n])}"
                 for n in names]
        ratio = f" | {med(names[1], key) / med(names[0], key):.2f}×" if len(names) == 2 and med(names[0], key) else ""
        lines.append(f"| {label} | " + " | ".join(cells) + ratio + " |")
    kill_rows = "\n".join(f"| {name} | {i + 1} | {k['acknowledged']} | {k['stored']} | **{k['lost']}** | "
                          f"{k['unacknowledged_stored']} | {k['leaderboard_submissions']} |"
                          for name in names for i, k in enumerate(kills[name]))
    baseline = f" --baseline {args.baseline}" if args.baseline else ""
    kill = f" --kill-after {args.kill_after:g}" if args.kill_after != 3.0 else ""
    return f"""## Competition server under load (loopback)

Command: `.venv/bin/python bench/server_load.py --processes {args.processes} --per-process {args.per_process} --queries {args.queries} --repeats {args.repeats}{baseline}{kill}`
(commit {git_rev()}). Machine: {machine()}; server and clients share its cores.
Each submission: {args.queries} queries × 10 names ({size / 1e3:.0f} kB of JSON), a new connection each,
{args.processes} client processes sending back to back. SQLite in WAL mode with synchronous=FULL:
every answer waits for its commit.{" The servers' runs alternate; ratio: this tree / baseline." if baseline else ""}

{chr(10).join(lines)}

Kill and restart: {args.processes} processes submit without pause; after {args.kill_after:g} s the server is
killed with SIGKILL, then restarted on the same database. "Lost" counts acknowledged (200) submissions
missing after the restart; "stored, not acknowledged" are those committed while their answer was cut off.

| server | run | acknowledged | stored after restart | lost | stored, not acknowledged | on the leaderboard |
|---|---|---|---|---|---|---|
{kill_rows}
"""


if __name__ == "__main__":
    main()
