"""`seal serve`, `seal remember`, `seal consolidate`: the service and its command-line clients."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cmd_serve(args) -> int:
    import uvicorn

    from seal.config import load_config
    from seal.serve.app import create_app
    from seal.serve.auth import load_keys
    from seal.serve.config import ServeConfig

    overrides = list(args.overrides)
    overrides += [f"{key}={value}" for key, value in (("memory.model.name", args.model), ("host", args.host),
                                                      ("port", args.port)) if value is not None]
    cfg = load_config(ServeConfig, args.config, overrides)
    cfg.schedule.daily_time()  # checked before anything is created
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    keys, key_file = load_keys(data)
    if key_file is not None:
        print(f"seal serve: no SEAL_API_KEY set; the key is in {key_file} "
              f"(export SEAL_API_KEY=$(cat {key_file}))", file=sys.stderr, flush=True)
    app = create_app(data, cfg, keys)
    print(f"seal serve: {data} on http://{cfg.host}:{cfg.port} (page at /, API docs at /docs)", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
    return 0


def cmd_remember(args) -> int:
    from seal.serve.client import remember

    print(json.dumps(remember(args.server, args.file, args.title)))
    return 0


def cmd_consolidate(args) -> int:
    from seal.serve.client import consolidate

    job = consolidate(args.server, args.wait)
    print(json.dumps(job))
    return 0 if job["state"] in ("running", "done") else 1


def ask_server(args) -> int:
    """`seal ask --server URL`: the answer on stdout, the version and the documents it used on stderr."""
    from seal.serve.client import ask

    reply = ask(args.server, args.question, model=args.version or "seal", retrieval=not args.no_retrieval)
    print(reply["choices"][0]["message"]["content"])
    seal = reply.get("seal", {})
    used = ", ".join(d["title"] for d in seal.get("documents", [])) or "none"
    print(f"(version {seal.get('version')}; retrieved documents: {used})", file=sys.stderr)
    return 0


def add_serve_parsers(sub) -> None:
    from seal.cli import config_args

    p = sub.add_parser("serve", help="run the self-updating memory service (HTTP API, page at /)")
    p.add_argument("--data", default="seal-data", help="state directory: documents, jobs, memory versions, key")
    p.add_argument("--model", help="base model of a new memory")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, help="default 8000")
    config_args(p)
    p.set_defaults(func=cmd_serve)

    server_help = "service URL (default: $SEAL_SERVER or http://127.0.0.1:8000); key from $SEAL_API_KEY"
    p = sub.add_parser("remember", help="add a document to a running service (answered at once, learned later)")
    p.add_argument("file", help="UTF-8 text file")
    p.add_argument("--title", help="default: the file name")
    p.add_argument("--server", help=server_help)
    p.set_defaults(func=cmd_remember)

    p = sub.add_parser("consolidate", help="learn a service's pending documents into its weights now")
    p.add_argument("--server", help=server_help)
    p.add_argument("--wait", action="store_true", help="follow the job to its end; exit 1 unless it is done")
    p.set_defaults(func=cmd_consolidate)
