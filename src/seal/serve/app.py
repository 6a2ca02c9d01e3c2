"""The FastAPI application: the service's state, keys, errors in one JSON shape, metrics, startup recovery."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import traceback
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from seal.config import save_config
from seal.memory import Memory
from seal.serve.answers import AnswerBatcher
from seal.serve.auth import Keys
from seal.serve.config import CONFIG_FILE, ServeConfig
from seal.serve.jobs import Consolidator, recover, run_schedule
from seal.serve.metrics import Metrics
from seal.serve.search import PendingIndex
from seal.serve.store import ConflictError, Store
from seal.serve.worker import DB_FILE, MEMORY_DIR

# paths anyone may read; everything else needs a key (GET/HEAD: the read key is enough)
OPEN_PATHS = {"/", "/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
# POST routes that only read (chat with "remember": true writes, and checks that itself)
READ_POSTS = {"/v1/search", "/v1/chat/completions"}


class Service:
    """Everything a request handler needs. One Memory answers every chat request, in batches (`answers`); it
    follows the active pointer by itself, so chat moves to a version the worker made as soon as that version
    is complete. A Memory is not thread-safe: only the answer thread touches its loaded model; request threads
    use only `active`, `versions()` and `activate()`, which read the directory or replace its pointer file."""

    def __init__(self, data: Path, cfg: ServeConfig):
        self.data, self.cfg = data, cfg
        data.mkdir(parents=True, exist_ok=True)
        self.memory = Memory.open(data / MEMORY_DIR, cfg.memory)  # refuses a config that does not fit the memory
        save_config(cfg, data / CONFIG_FILE)  # the worker reads the server's exact settings
        self.store = Store(data / DB_FILE)
        self.index = PendingIndex(cfg.passage_words)
        self.consolidator = Consolidator(self.store, data, self.memory)
        self.metrics = Metrics(self.store.counts, self.store.job_counts, lambda: self.memory.active)
        self.answers = AnswerBatcher(self.memory, cfg.chat_batch, self.metrics.chat_batch.observe)

    def versions(self) -> list[dict]:
        return self.memory.versions()  # reads the directory only: no need to wait for an answer in progress

    def search(self, query: str, k: int) -> list[dict]:
        self.index.refresh(self.store.documents("pending", with_text=True))
        return self.index.search(query, k)


class BodyLimit:
    """Refuses (413) a request body as soon as more than `limit` bytes of it have arrived. A chunked upload
    has no Content-Length to check beforehand: the count is kept while the body is received, so that no more
    than the limit is ever read into memory. The refusal is raised where the body is read, before a handler
    runs, so nothing is written."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


def error(status: int, message: str, kind: str | None = None) -> JSONResponse:
    """Every error in the shape OpenAI clients read: {"error": {"message", "type", "code"}}."""
    kinds = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 409: "conflict_error",
             413: "request_too_large", 422: "invalid_request_error"}
    return JSONResponse({"error": {"message": message, "type": kind or kinds.get(status, "server_error"),
                                   "code": status}}, status_code=status,
                        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return "; ".join(parts)


def create_app(data: str | Path, cfg: ServeConfig, keys: Keys) -> FastAPI:
    from seal.serve.api import router
    from seal.serve.chat import router as chat_router

    cfg.schedule.daily_time()  # a bad time is a config error at start, not a crash at midnight
    service = Service(Path(data), cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for job in recover(service.store, service.data, service.memory):
            print(f"seal serve: consolidation {job} was interrupted; its unfinished documents are pending again",
                  file=sys.stderr, flush=True)
        task = asyncio.create_task(run_schedule(cfg.schedule, service.consolidator,
                                                lambda: service.store.counts()["pending"]))
        yield
        task.cancel()
        service.consolidator.stop()
        service.answers.close()

    app = FastAPI(title="seal", description="A self-updating memory: documents answered at once by retrieval, "
                  "learned into the weights at consolidation.", lifespan=lifespan)
    app.state.service = service

    def refusal(request: Request) -> JSONResponse | None:
        """A declared size over the limit, and keys, checked before the body is read (`BodyLimit` counts the
        bytes of a body whose size is not declared)."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cfg.max_request_bytes):
            return error(413, f"request body over {cfg.max_request_bytes} bytes")
        if request.url.path in OPEN_PATHS:
            return None
        access = keys.access(request.headers.get("authorization"))
        if access is None:
            return error(401, "missing or wrong API key (Authorization: Bearer KEY)")
        if request.method not in ("GET", "HEAD") and request.url.path not in READ_POSTS and access != "write":
            return error(403, "this key may only read")
        request.state.access = access
        return None

    # inside `guard` (added before it): `guard` reads the body in a task group, which would wrap the refusal
    app.add_middleware(BodyLimit, limit=cfg.max_request_bytes)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Refusals first; then the request, counted in the metrics whatever its outcome."""
        start = time.perf_counter()
        response = refusal(request)
        if response is None:
            try:
                response = await call_next(request)
            except Exception as exc:  # a bug or a broken model: said in the response and the log, never silent
                traceback.print_exception(exc)
                response = error(500, f"{type(exc).__name__}: {exc}")
        route = request.scope.get("route")
        service.metrics.observe(request.method, getattr(route, "path", "unmatched"), response.status_code,
                                time.perf_counter() - start)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error(422, _validation_message(exc))

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError):
        return error(409, str(exc))

    app.include_router(router)
    app.include_router(chat_router)
    return app
