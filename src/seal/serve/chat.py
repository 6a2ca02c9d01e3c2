"""OpenAI-compatible chat (`POST /v1/chat/completions`, streaming or not) and `GET /v1/models`.

The answer comes from the memory's weights (the active version, or the version named as `model`), with the
best passages of documents not yet consolidated in the prompt: what was added a minute ago is answered from
retrieval, what was consolidated last night from the weights. The response says which documents it used.
`"remember": true` stores the exchange as a pending document, so an agent's conversations are learned at the
next consolidation. Concurrent requests are answered in batches (`seal.serve.answers`). Answers are greedy
(sampling fields such as temperature are accepted and ignored). A streamed answer is sent as SSE chunks while
it is generated; a failure after the response has begun ends it with an error event, which OpenAI clients
raise.
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from typing import Callable, Iterator, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

router = APIRouter()
ACTIVE = "seal"  # the model name that means "the active version"


class TextPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (temperature, ...)
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    remember: bool = False
    retrieval: bool = True  # false: answer from the weights alone


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


@router.get("/v1/models")
def list_models(request: Request) -> dict:
    svc = request.app.state.service
    names = [ACTIVE] + [v["name"] for v in svc.versions()]
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "seal"} for n in names]}


@router.post("/v1/chat/completions")
def chat(body: ChatIn, request: Request):
    svc = request.app.state.service
    if body.remember and request.state.access != "write":
        raise HTTPException(403, '"remember": true stores a document; this key may only read')
    version = None if body.model == ACTIVE else body.model
    if version is not None and version not in [v["name"] for v in svc.versions()]:
        raise HTTPException(404, f"no model {body.model!r}: use {ACTIVE!r} (the active version) or a version name")
    questions = [m.text() for m in body.messages if m.role == "user" and m.text().strip()]
    if not questions:
        raise HTTPException(422, "messages: no user message with text")
    question = questions[-1]
    if len(question) > svc.cfg.max_document_chars:
        raise HTTPException(413, f"message of {len(question)} characters; the limit is {svc.cfg.max_document_chars}")
    hits = svc.search(question, svc.cfg.chat_passages) if body.retrieval and svc.cfg.chat_passages else []
    context = tuple((h["title"], h["text"]) for h in hits)

    def report(answer: str, used_version: str) -> dict:
        """The response's `seal` field, once the answer is complete (remembering the exchange if asked)."""
        seal = {"version": used_version, "documents": [{"id": h["document"], "title": h["title"], "score": h["score"]}
                                                       for h in hits]}
        if body.remember:
            exchange = "\n".join(f"{m.role}: {m.text()}" for m in body.messages) + f"\nassistant: {answer}"
            doc, _ = svc.store.add_document(f"conversation: {question[:80]}", exchange, None)
            seal["remembered"] = doc["id"]
        return seal

    cid, created = _completion_id(), int(time.time())
    if body.stream:
        used_version, pieces = svc.answers.stream(question, context, version)
        return StreamingResponse(_sse(cid, created, used_version, pieces, lambda a: report(a, used_version)),
                                 media_type="text/event-stream")
    answer, used_version = svc.answers.answer(question, context, version)
    return {"id": cid, "object": "chat.completion", "created": created, "model": used_version,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "seal": report(answer, used_version)}


def _sse(cid: str, created: int, model: str, pieces: Iterator[str], report: Callable[[str], dict]) -> Iterator[str]:
    def event(delta: dict, finish: str | None = None, **extra) -> str:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    answer = ""
    try:
        for piece in pieces:
            answer += piece
            yield event({"content": piece})
        seal = report(answer)
    except Exception as exc:  # the status line is sent already: the error goes in the stream, and in the log
        traceback.print_exception(exc)
        error = {"message": f"{type(exc).__name__}: {exc}", "type": "server_error", "code": 500}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    yield event({}, "stop", seal=seal)
    yield "data: [DONE]\n\n"
