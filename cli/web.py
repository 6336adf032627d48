"""The search page (webapp/): one gallery store behind a small web app (FastAPI + uvicorn), on loopback.

    facematch web --store outputs/store                    # http://127.0.0.1:8000
    facematch web --store outputs/store --port 8080 feedback.method=svm    # a taken port is refused first
    facematch web --check-port --port 8080                 # is it free? (make serve asks before building)
    make serve PORT=8080                                   # builds outputs/best_store from the sample first

Upload a photo (or pick one from the gallery) and see the nearest gallery photos as a grid with
their distances and the crop that was searched; mark results relevant or irrelevant and press
'refine' for the next round of unseen photos by the chosen feedback method (search/feedback.py);
add photos to the gallery or remove one; type a name and mark results as that person to learn the
name (a prototype kept in the store), then search by the name.

Uploads are checked before anything else happens: size (web.max_upload_bytes), pixels
(web.max_pixels, against decompression bombs), type (decoded by Pillow, whatever the file is
called), a face found by the store model's detection chain (a centre crop is said out loud; no face
on a chain without `center` is refused). A refused upload is a message on the page with a 4xx
status, never a traceback, and leaves the store untouched.

Sessions: a random cookie id maps to the session's state in memory (query embedding and crop,
marks, rows shown, round, method); the web.max_sessions most recently used are kept. All store
work runs on one worker thread (SQLite's connection lives there), one request at a time. Connections are
bounded as the competition server's are (serving.bounds): a request's line and headers must come within
web.header_timeout, the whole request within web.read_timeout; at web.max_connections the oldest connection whose
request has not come whole makes room for a newcomer.
The competition server (`facematch serve`) is separate and stays torch-free.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from search.feedback import FeedbackSettings
from serving import Bounds, SettingNames, bounded_config, is_loopback
from settings import run_command
from utils import ConfigError, get_logger
from webapp.app import create_app
from webapp.service import WebSettings

log = get_logger()


def app_for(store: str | Path, cfg: dict):
    """The page's app over `store` with the config's web and feedback settings and retrieval.fpir (the store
    crops and embeds through the caches it was built with)."""
    return create_app(store, WebSettings(**cfg["web"]), FeedbackSettings(**cfg["feedback"]),
                      fpir=float(cfg["retrieval"]["fpir"]))


def server_config(app, **options):
    """uvicorn's config for the page's app within the web section's connection bounds (serving.bounds: a deadline for
    a request's head and one for the whole request, connections capped with room kept for requests that come whole);
    `options` are uvicorn.Config's own."""
    web = app.state.web.web
    bounds = Bounds(float(web.read_timeout), float(web.header_timeout), int(web.max_connections),
                    int(web.max_connections_per_client), SettingNames.of("web"))
    return bounded_config(app, bounds, **options)


# ---------------------------------------------------------------- command line

def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="the gallery store's folder (facematch store build)")
    parser.add_argument("--port", type=int, help="port (web.port, default 8000)")
    parser.add_argument("--check-port", action="store_true",
                        help="only check that the port is free, and say so (make serve asks before building anything)")


def listening_socket(host: str, port: int) -> socket.socket:
    """The page's socket, bound now: a port that is taken is refused before the store is opened or the model
    loaded, naming the port and how to choose another."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"web.port={port}: cannot listen on {host}:{port} ({exc.strerror}): another program has "
                          f"it; choose another port (make serve PORT={port + 1}, or facematch web --port {port + 1})") from None
    return sock


def serve_page(args: argparse.Namespace) -> int:
    import uvicorn
    from PIL import Image

    cfg = args.cfg
    cfg["web"]["token"] = cfg["web"]["token"] or os.environ.get("FACEMATCH_WEB_TOKEN", "")
    host, port = cfg["web"]["host"], int(args.port if args.port is not None else cfg["web"]["port"])
    sock = listening_socket(host, port)
    if args.check_port:
        sock.close()
        log.info(f"{host}:{port} is free")
        return 0
    if not args.store:
        args.parser.error("--store is required")
    Image.MAX_IMAGE_PIXELS = int(cfg["web"]["max_pixels"])  # the pipeline's own reads refuse bombs too
    app = app_for(args.store, cfg)
    web = app.state.web
    web.worker.submit(lambda: web.store().model()).result()  # load the model now: a bad checkpoint fails here
    if not is_loopback(host):
        log.warning(f"web.host={host}: the page (which can add and remove photos) is open to other machines")
    log.info(f"search page on http://{host}:{port}/ for {args.store} ({web.worker.submit(lambda: len(web.store())).result()} photos)")
    uvicorn.Server(server_config(app, log_level="warning")).run(sockets=[sock])
    web.close()  # the app's shutdown closed it already (a SIGTERM never reaches this line: uvicorn raises it again)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, serve_page, argv, prog="facematch web")


if __name__ == "__main__":
    sys.exit(main())
