"""Rank the gallery for every query and send the top-k names to the competition server.

    python request_send.py --checkpoint checkpoints/demo/best.pt --test data/competition/test \
                           --out outputs/submission.json             # rank, save, submit
    python request_send.py ... --dry-run                             # rank and save only
    python request_send.py --payload outputs/submission.json         # send a saved payload again

The payload is written to --out before anything is sent, so a server that is down loses nothing:
send the same file again with --payload.

Read top to bottom, one photo's path: `main` reads the arguments and the configuration once, `rank_and_send`
ranks (`rank_test_set`: the checkpoint's model, then pipeline.embedding for query/ and gallery/, then
search.retrieval), checks and writes the payload, and `submit` POSTs it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import utils  # noqa: F401  first: without .venv's packages it says "run `make venv` first", not a traceback
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from competition import PayloadError, validate_payload
from utils import FacematchError, atomic_write, get_logger
from settings import COMMAND_ERRORS, command_failed, command_parser, load_config, parse_command, read_layers

log = get_logger()


class SubmissionError(FacematchError, RuntimeError):
    """The server could not be reached, kept failing, or rejected the submission."""


def build_payload(groupname: str, query_names: list[str], ranked: list[list[str]]) -> dict:
    """The course server's JSON: {'groupname': team, 'images': {query: [gallery names]}}."""
    return {"groupname": groupname, "images": {q: list(r) for q, r in zip(query_names, ranked)}}


def submit(payload: dict, url: str, timeout: float = 30, retries: int = 3, backoff: float = 0.5,
           token: str = "") -> dict:
    """POST the payload as a raw JSON body and return the server's JSON answer.

    Connection errors and 5xx answers are retried with exponential back-off; 4xx answers are
    not (the same payload would be refused again) and raise SubmissionError with the server's message.
    """
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, other=0,
                  backoff_factor=backoff, status_forcelist=(500, 502, 503, 504),
                  allowed_methods=None, raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        answer = session.post(url, data=json.dumps(payload).encode(), headers=headers, timeout=timeout)
    except requests.exceptions.RequestException as exc:
        raise SubmissionError(f"could not reach the server at {url} after {retries + 1} tries: "
                              f"{exc.__class__.__name__}") from None
    finally:
        session.close()
    try:
        body = answer.json()
    except ValueError:
        body = {"message": answer.text[:300]}
    if answer.status_code >= 500:
        raise SubmissionError(f"server at {url} answered {answer.status_code} after {retries + 1} tries: "
                              f"{body.get('message', body) if isinstance(body, dict) else body}")
    if answer.status_code >= 400:
        raise SubmissionError(f"server rejected the submission ({answer.status_code}): "
                              f"{body.get('message', body) if isinstance(body, dict) else body}")
    return body


def rank_test_set(checkpoint: str, test_dir: str | Path, layers: list, user: dict) -> tuple[dict, set[str], int]:
    """Crop and embed test/query and test/gallery, rank; returns (payload, gallery names, k). `layers` and `user`:
    the command's configuration as read (settings.read_layers) and loaded from them, put on the checkpoint's."""
    from settings import embed_settings, load_for_inference
    from pipeline.embedding import embed_folder
    from search.retrieval import rank
    from search.retrieval_settings import RetrievalSettings

    model, cfg, device = load_for_inference(checkpoint, layers=layers, user=user)
    test_dir = Path(test_dir)
    queries = embed_folder(test_dir / "query", model, device, **embed_settings(cfg))
    gallery = embed_folder(test_dir / "gallery", model, device, **embed_settings(cfg))
    for what in (queries, gallery):
        if what.skipped:
            log.warning(f"{len(what.skipped)} unreadable photos left out: {', '.join(what.skipped[:5])}")
    retrieval = RetrievalSettings(**cfg["retrieval"])
    ranked = rank(queries.embeddings, gallery.embeddings, gallery.names, retrieval.k, retrieval)
    return build_payload(cfg["submit"]["groupname"], queries.names, ranked), set(gallery.names), retrieval.k


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="a checkpoint written by train.py")
    parser.add_argument("--test", default="data/competition/test", help="folder holding query/ and gallery/")
    parser.add_argument("--payload", help="send this saved payload instead of ranking")
    parser.add_argument("--out", default="outputs/submission.json", help="where the payload is written first")
    parser.add_argument("--dry-run", action="store_true", help="rank and write --out, do not send")


def rank_and_send(args: argparse.Namespace, cfg: dict, layers: list) -> int:
    """Rank the test set (or read --payload), check and write the payload, and send it unless --dry-run."""
    if args.payload:
        try:
            payload = json.loads(Path(args.payload).read_text())
        except (OSError, ValueError) as exc:
            raise PayloadError(f"cannot read payload {args.payload}: {exc}") from None
        try:
            validate_payload(payload, None, int(cfg["retrieval"]["k"]))
        except PayloadError as exc:
            raise PayloadError(f"{args.payload}: {exc}") from None
    else:
        if not args.checkpoint:
            args.parser.error("give --checkpoint (to rank) or --payload (to resend)")
        payload, gallery, k = rank_test_set(args.checkpoint, args.test, layers, cfg)
        validate_payload(payload, gallery, k)
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
        print(f"payload: {len(payload['images'])} queries × {k} names written to {args.out}")
    if args.dry_run:
        return 0
    s = cfg["submit"]
    answer = submit(payload, s["url"], s["timeout"], s["retries"], s["backoff"], s["token"])
    results = answer.get("results", answer)
    print(f"server answered (submission {answer.get('id', '?')}): "
          + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items())
          + (f"  ({answer['message']})" if answer.get("message") else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`facematch submit`: the configuration read once (its files and overrides, then config/default.yaml under
    them), then rank_and_send; an error is one line and exit status 2."""
    parser = command_parser(__doc__)
    arguments(parser)
    args = parse_command(parser, argv)
    try:
        layers = read_layers(args.config, args.overrides)
        return rank_and_send(args, load_config(layers=layers), layers)
    except COMMAND_ERRORS as exc:
        return command_failed(exc)


if __name__ == "__main__":
    sys.exit(main())
