"""The search page (webapp/): one gallery store behind a small web app (FastAPI + uvicorn), on loopback.

    facematch web --store outputs/store                    # http://127.0.0.1:8000
    facematch web --store outputs/store web.port=8080 feedback.method=svm
    make serve                                             # builds outputs/store from the demo first

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
work runs on one worker thread (SQLite's connection lives there), one request at a time.
The competition server (`facematch serve`) is separate and stays torch-free.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from search.feedback import FeedbackSettings
from settings import run_command
from utils import get_logger
from webapp.app import create_app
from webapp.service import WebSettings

log = get_logger()


def app_for(store: str | Path, cfg: dict):
    """The page's app over `store` with the config's web and feedback settings and retrieval.fpir (the store
    crops and embeds through the caches it was built with)."""
    return create_app(store, WebSettings(**cfg["web"]), FeedbackSettings(**cfg["feedback"]),
                      fpir=float(cfg["retrieval"]["fpir"]))


# ---------------------------------------------------------------- command line

def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="the gallery store's folder (facematch store build)")


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from PIL import Image

    cfg = args.cfg
    Image.MAX_IMAGE_PIXELS = int(cfg["web"]["max_pixels"])  # the pipeline's own reads refuse bombs too
    app = app_for(args.store, cfg)
    web = app.state.web
    web.worker.submit(lambda: web.store().model()).result()  # load the model now: a bad checkpoint fails here
    host, port = cfg["web"]["host"], int(cfg["web"]["port"])
    try:
        if not ipaddress.ip_address(host).is_loopback:
            log.warning(f"web.host={host}: the page (which can add and remove photos) is open to other machines")
    except ValueError:
        pass
    log.info(f"search page on http://{host}:{port}/ for {args.store} ({web.worker.submit(lambda: len(web.store())).result()} photos)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    web.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(__doc__, arguments, serve, argv, prog="facematch web")


if __name__ == "__main__":
    sys.exit(main())
