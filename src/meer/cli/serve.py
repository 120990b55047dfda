"""``meer serve``: the HTTP API and a web page (upload two photos, see the decision and the
restored faces; with ``--gallery``, enrol people and identify a photo). Listens on 127.0.0.1
unless told otherwise; needs ``pip install 'meer[serve]'``.

Enrolling, renaming and deleting people need a token: ``--token`` or the environment variable
``MEER_TOKEN`` (preferred: a command line is visible to other users of the machine). Without
one the gallery is read-only."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket

from meer.cli import number
from meer.cli.inference import add_model_arguments, load_from_args

log = logging.getLogger(__name__)

ENV_TOKEN = "MEER_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="HTTP API and web page for verification and unmasking",
                            description=__doc__)
    add_model_arguments(parser, aligned=False, as_json=False)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=number(int, 0, 65535), default=8000, help="port (default: 8000; 0 picks a free one)")
    parser.add_argument("--max-upload-mb", type=number(float, above=0), default=10.0, help="request size limit (default: 10)")
    parser.add_argument("--max-megapixels", type=number(float, above=0), default=40.0,
                        help="image size limit, width x height (default: 40)")
    parser.add_argument("--threads", type=number(int, 1), help="torch CPU threads for inference (default: torch's choice)")
    parser.add_argument("--gallery", "-g", metavar="FILE",
                        help="gallery database for enrol / identify (created if missing; e.g. people.db)")
    parser.add_argument("--token", default=os.environ.get(ENV_TOKEN),
                        help=f"secret that enrol, rename and delete need (default: ${ENV_TOKEN}; none: read-only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from meer.web import Limits, create_app
    except ImportError as err:
        raise ValueError(f"meer serve needs its extra: pip install 'meer[serve]' ({err})") from None
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ValueError("--max-upload-mb and --max-megapixels must be positive")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    model = load_from_args(args)
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6))
    gallery = None
    if args.gallery:
        from meer.gallery import open_gallery

        gallery = open_gallery(args.gallery, model)
    app = create_app(model, limits, gallery, args.token)
    log.info("face detector: %s", model.detector.name)  # created now, not in the first request
    # Binding here (not in uvicorn) lets --port 0 report the port it got.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    host, port = sock.getsockname()[:2]
    if not ipaddress.ip_address(host).is_loopback:
        log.warning("listening on %s: anyone who can reach it can upload photos and identify them "
                    "(only gallery changes need the token)", host)
    url = f"http://[{host}]:{port}/" if family == socket.AF_INET6 else f"http://{host}:{port}/"
    if gallery is not None:
        mode = "token required for changes" if args.token else "read-only: no token"
        log.info("gallery %s: %d people (%s)", gallery.path, len(gallery), mode)
    print(f"meer serve: {url} (model {model.checkpoint}; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="info", timeout_keep_alive=5, limit_concurrency=64)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
