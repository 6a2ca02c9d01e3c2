"""The REST endpoints: documents, search, consolidation jobs, versions, health, metrics and the page."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from seal.serve.store import ConflictError

router = APIRouter()


class QuestionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=500)
    text: str = Field(min_length=1)
    questions: list[QuestionIn] | None = Field(default=None, description="your quiz; without it the model "
                                               "writes its own")


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    k: int | None = Field(default=None, ge=1, le=100)


def _service(request: Request):
    return request.app.state.service


@router.get("/", include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse((files("seal.serve") / "page.html").read_text(encoding="utf-8"))


@router.get("/healthz")
def healthz(request: Request) -> dict:
    svc = _service(request)
    return {"status": "ok", "active": svc.memory.active}


@router.get("/metrics")
def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(_service(request).metrics.text(), media_type="text/plain; version=0.0.4")


@router.post("/v1/documents", status_code=202)
def add_document(body: DocumentIn, request: Request):
    """Store a document (pending: searchable at once, learned at the next consolidation). The same title and
    text again answers 200 with the document already stored."""
    svc = _service(request)
    if len(body.text) > svc.cfg.max_document_chars:
        raise HTTPException(413, f"document of {len(body.text)} characters; the limit is {svc.cfg.max_document_chars}")
    questions = [q.model_dump() for q in body.questions] if body.questions else None
    doc, created = svc.store.add_document(body.title, body.text, questions)
    return JSONResponse({"id": doc["id"], "state": doc["state"], "duplicate": not created},
                        status_code=202 if created else 200)


@router.get("/v1/documents")
def list_documents(request: Request, state: str | None = None) -> dict:
    return {"documents": _service(request).store.documents(state)}


@router.get("/v1/documents/{doc_id}")
def get_document(doc_id: str, request: Request) -> dict:
    doc = _service(request).store.document(doc_id)
    if doc is None:
        raise HTTPException(404, f"no document {doc_id}")
    return doc


@router.delete("/v1/documents/{doc_id}")
def delete_document(doc_id: str, request: Request) -> dict:
    if not _service(request).store.delete_document(doc_id):
        raise HTTPException(404, f"no document {doc_id}")
    return {"id": doc_id, "deleted": True}


@router.post("/v1/search")
def search(body: SearchIn, request: Request) -> dict:
    """BM25 over the passages of documents not yet consolidated (what chat adds to its prompt)."""
    svc = _service(request)
    return {"results": svc.search(body.query, body.k or svc.cfg.search_k)}


@router.post("/v1/consolidate", status_code=202)
async def consolidate(request: Request) -> dict:
    """Start learning the pending documents in a worker process; 409 while another consolidation runs.
    Async on purpose: the worker is started from the event loop's long-lived thread (see Consolidator.start)."""
    job = _service(request).consolidator.start("request")
    return {"job": job["id"], "state": job["state"], "documents": job["documents"]}


@router.get("/v1/jobs")
def list_jobs(request: Request) -> dict:
    return {"jobs": _service(request).store.jobs()}


@router.get("/v1/jobs/{job_id}")
def get_job(job_id: str, request: Request) -> dict:
    job = _service(request).store.job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


@router.get("/v1/versions")
def versions(request: Request) -> dict:
    """The memory's versions, each with the consolidation decision that made it (quiz and probe scores)."""
    svc = _service(request)
    reports = {d["version"]: d for job in svc.store.jobs() for d in job["decisions"] if d.get("version")}
    listed = svc.versions()
    return {"active": svc.memory.active,
            "versions": [v | {"report": reports.get(v["name"])} for v in listed]}


@router.post("/v1/versions/{version}/activate")
def activate(version: str, request: Request) -> dict:
    """Make `version` the one chat answers from (rollback). Refused while a consolidation runs, since the
    worker is writing the next version on top of the active one."""
    svc = _service(request)
    if version not in [v["name"] for v in svc.versions()]:
        raise HTTPException(404, f"no version {version}")
    if (job := svc.store.running_job()) is not None:
        raise ConflictError(f"consolidation {job['id']} is running; activate a version after it has finished")
    svc.memory.activate(version)  # replaces the pointer file atomically; answers read it at their next batch
    return {"active": svc.memory.active}
