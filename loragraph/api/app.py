"""The Litestar app: controllers, auth guards, error mapping, the store and the worker queue.

``create_app(routers, settings)`` is the seam: ``loragraph serve`` passes real
``Router`` objects built from pipeline YAML; tests pass ``EchoRouter`` doubles. Routers
are reached by dependency (``Provide``); blocking ``router.run`` calls happen on worker
threads (``RunQueue``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import anyio
from litestar import Controller, Litestar, MediaType, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State, UploadFile
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Encoding,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.params import Parameter
from litestar.plugins.pydantic import PydanticPlugin
from litestar.static_files import create_static_files_router
from pydantic import ValidationError

from loragraph.api.errors import AuthError, QueueFullError, RunTimedOutError, http_status, scrub
from loragraph.api.metrics import PROMETHEUS_CONTENT_TYPE, ApiMetrics
from loragraph.api.models import (
    AdapterInfo,
    AdapterVersionInfo,
    Document,
    ErrorBody,
    FeedbackRecord,
    FeedbackRequest,
    Health,
    JobRecord,
    JobRequest,
    PipelineInfo,
    PromoteRequest,
    PromotionResult,
    Readiness,
    RunRecord,
    StageInfo,
)
from loragraph.api.runner import RouterLike, RunQueue, WorkItem
from loragraph.api.settings import ApiSettings
from loragraph.api.store import TIMEOUT, Store, new_id
from loragraph.errors import InputError, LoragraphError, NotFoundError
from loragraph.router.result import RunResult

_SWAGGER_DIR = Path(__file__).parent / "static" / "swagger-ui"
_SWAGGER_PATH = "/static/swagger-ui"

__all__ = ["ApiService", "create_app", "describe_stages"]

log = logging.getLogger("loragraph.api")

_BEARER = "BearerToken"


# --------------------------------------------------------------------------- auth


def _bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _key_in(token: str, keys: list[str]) -> bool:
    found = False
    for key in keys:  # compare against every key: no early exit timing
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def require_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """With user keys configured, a user or admin key is needed; without, the route is open."""
    settings: ApiSettings = connection.app.state.settings
    if not settings.api_keys:
        return
    token = _bearer_token(connection)
    if token is None:
        raise AuthError("missing `Authorization: Bearer <key>` header", status=401)
    if not _key_in(token, settings.api_keys + settings.admin_keys):
        raise AuthError("the API key is not valid", status=401)


def require_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """An admin key is needed; with none configured the route is disabled (403)."""
    settings: ApiSettings = connection.app.state.settings
    if not settings.admin_keys:
        raise AuthError(
            "promotion and rollback are disabled: the server has no admin key "
            "(start it with `LORAGRAPH_ADMIN_KEYS` or `--admin-key`)",
            status=403,
        )
    token = _bearer_token(connection)
    if token is None:
        raise AuthError("missing `Authorization: Bearer <admin key>` header", status=401)
    if _key_in(token, settings.admin_keys):
        return
    if _key_in(token, settings.api_keys):
        raise AuthError("this route needs an admin key; a user key was given", status=403)
    raise AuthError("the API key is not valid", status=401)


# --------------------------------------------------------------------------- errors


def _error_response(status: int, detail: str, error: str, headers: dict[str, str] | None = None) -> Response[Any]:
    body = ErrorBody(status_code=status, detail=detail, error=error)
    return Response(content=body.model_dump(), status_code=status, headers=headers or {}, media_type=MediaType.JSON)


def _on_loragraph_error(_: Request[Any, Any, Any], exc: LoragraphError) -> Response[Any]:
    status = http_status(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, QueueFullError):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="loragraph"'
    if status == 500:
        log.error("request failed: %s", exc)
    return _error_response(status, scrub(str(exc)), type(exc).__name__, headers)


def _on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = str(exc.detail)
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        fields = [
            f"`{item.get('key') or item.get('source') or 'body'}`: {item.get('message', 'invalid')}"
            for item in exc.extra
            if isinstance(item, dict)
        ]
        detail = "; ".join(fields) or detail
    if exc.status_code >= 500:
        detail = "internal server error" if exc.status_code == 500 else detail
    return _error_response(
        exc.status_code, scrub(detail), type(exc).__name__, dict(exc.headers or {})
    )


def _on_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unexpected error", exc_info=exc)
    return _error_response(500, "internal server error", "InternalServerError")


def _pydantic_detail(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"`{loc}`: {err['msg']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- request bodies


def _schema_of_document() -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["text"],
        additional_properties=False,
        properties={
            "text": Schema(type=OpenAPIType.STRING, min_length=1, pattern=r"\S", description="the document text"),
            "metadata": Schema(type=OpenAPIType.OBJECT, description="free-form JSON object stored with the run"),
        },
    )


_UPLOAD_TYPES = "text/plain, text/markdown, message/rfc822 (.eml: subject + body), application/pdf"


@dataclass
class _RunBodyOperation(Operation):
    """OpenAPI for the run endpoint: a JSON document or a multipart upload."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=f"JSON `{{text, metadata?}}`, or multipart with one `file` ({_UPLOAD_TYPES}) "
            "or a `text` field, plus an optional `metadata` field holding a JSON object",
            content={
                "application/json": OpenAPIMediaType(schema=_schema_of_document()),
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        additional_properties=False,
                        properties={
                            "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description=_UPLOAD_TYPES),
                            "text": Schema(
                                type=OpenAPIType.STRING, min_length=1, pattern=r"\S",
                                description="document text instead of a file",
                            ),
                            "metadata": Schema(type=OpenAPIType.OBJECT, description="a JSON object (sent as JSON text)"),
                        },
                        one_of=[Schema(required=["file"]), Schema(required=["text"])],
                    ),
                    encoding={"metadata": Encoding(content_type="application/json")},
                ),
            },
        )


@dataclass
class _JobBodyOperation(Operation):
    """OpenAPI for the batch endpoint: JSON documents or several uploaded files."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=f"JSON `{{documents: [{{text, metadata?}}, ...]}}`, or multipart with `file` parts ({_UPLOAD_TYPES})",
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["documents"],
                        additional_properties=False,
                        properties={
                            "documents": Schema(type=OpenAPIType.ARRAY, min_items=1, items=_schema_of_document()),
                        },
                    )
                ),
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["file"],
                        additional_properties=False,
                        properties={
                            "file": Schema(
                                type=OpenAPIType.ARRAY,
                                min_items=1,
                                items=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY),
                                description=_UPLOAD_TYPES,
                            ),
                            "metadata": Schema(type=OpenAPIType.OBJECT, description="a JSON object for every run"),
                        },
                    ),
                    encoding={"metadata": Encoding(content_type="application/json")},
                ),
            },
        )


def _parse_metadata(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError as exc:
        raise InputError(f"`metadata` is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise InputError("`metadata` must be a JSON object")
    return value


async def _file_document(upload: Any, metadata: dict[str, Any]) -> Document:
    from loragraph.api.documents import extract_text

    if not isinstance(upload, UploadFile):
        raise InputError("`file` must be a file upload (a part with a filename)")
    data = await upload.read()
    text = await anyio.to_thread.run_sync(extract_text, data, upload.content_type, upload.filename)
    return _document(text, metadata)


def _document(text: str, metadata: dict[str, Any]) -> Document:
    try:
        return Document(text=text, metadata=metadata)
    except ValidationError as exc:
        raise InputError(_pydantic_detail(exc)) from exc


async def read_documents(request: Request[Any, Any, Any], *, many: bool, limit: int) -> list[Document]:
    """Documents of a run (``many=False``: exactly one) or job request; 415 / 400 / 413 on bad input."""
    from loragraph.api.errors import UnsupportedMediaError

    media = request.content_type[0].lower()
    if media == "application/json":
        body = await request.body()
        try:
            if many:
                docs = JobRequest.model_validate_json(body).documents
            else:
                docs = [Document.model_validate_json(body)]
        except ValidationError as exc:
            raise InputError(_pydantic_detail(exc)) from exc
    elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        metadata = _parse_metadata(form.get("metadata"))
        uploads = [v for v in form.getall("file")] if "file" in form else []
        text = form.get("text")
        if many:
            docs = [await _file_document(upload, metadata) for upload in uploads]
            if isinstance(text, str) and text.strip():
                docs.append(_document(text, metadata))
            if not docs:
                raise InputError("`file` is required: send one or more `file` parts")
        else:
            if len(uploads) > 1 or (uploads and text is not None):
                raise InputError("send exactly one `file` or one `text` field, not several")
            if uploads:
                docs = [await _file_document(uploads[0], metadata)]
            elif isinstance(text, str):
                docs = [_document(text, metadata)]
            else:
                raise InputError("`file` is required: send one `file` part (or a `text` field)")
    else:
        raise UnsupportedMediaError(
            "request `Content-Type` must be `application/json`, `multipart/form-data` or "
            f"`application/x-www-form-urlencoded`, got `{media or 'none'}`"
        )
    if len(docs) > limit:
        raise InputError(f"`documents` holds {len(docs)} documents; at most {limit} per job")
    return docs


# --------------------------------------------------------------------------- service


def describe_stages(spec: Any) -> list[StageInfo]:
    """``StageInfo`` for each stage of a router's spec (``spec.stages``: list or mapping)."""
    stages = getattr(spec, "stages", None) or []
    items = list(stages.items()) if isinstance(stages, Mapping) else [(None, s) for s in stages]
    out: list[StageInfo] = []
    for key, stage in items:
        def field(name: str, stage: Any = stage) -> Any:
            return stage.get(name) if isinstance(stage, Mapping) else getattr(stage, name, None)

        kind = field("kind")
        adapter = field("adapter")
        out.append(
            StageInfo(
                name=str(field("name") or key),
                kind=str(getattr(kind, "value", kind) or "unknown"),
                adapter=str(adapter) if adapter is not None else None,
            )
        )
    return out


def _ref(version: Any) -> str:
    return str(getattr(version, "ref", version))


class ApiService:
    """What the handlers do, apart from HTTP: routers, store, queue, registry."""

    def __init__(
        self,
        routers: Mapping[str, RouterLike],
        settings: ApiSettings,
        store: Store,
        queue: RunQueue,
        metrics: ApiMetrics,
        registry: Any | None,
    ) -> None:
        self.routers = routers
        self.settings = settings
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self._registry = registry

    def router(self, name: str) -> RouterLike:
        """The router serving ``name`` (``NotFoundError`` naming the served pipelines)."""
        try:
            return self.routers[name]
        except KeyError:
            served = ", ".join(f"`{n}`" for n in self.routers) or "none"
            raise NotFoundError(f"no pipeline named `{name}`; served pipelines: {served}") from None

    @property
    def registry(self) -> Any:
        """The adapter registry (created on first use from ``settings.registry_root``)."""
        if self._registry is None:
            from loragraph.adapters.registry import Registry

            self._registry = Registry(self.settings.registry_root)
        return self._registry

    # ------------------------------------------------------------------ runs

    def check_document(self, pipeline: str, doc: Document) -> None:
        """Refuse (400) a document the pipeline's limits refuse, before anything is stored."""
        limits = getattr(getattr(self.router(pipeline), "spec", None), "limits", None)
        limit = getattr(limits, "max_document_chars", None)
        if isinstance(limit, int) and limit > 0 and len(doc.text) > limit:
            raise InputError(f"`text` has {len(doc.text)} characters; pipeline `{pipeline}` accepts at most {limit}")

    async def run(self, pipeline: str, doc: Document) -> RunResult:
        """Store the run as queued, hand it to a worker, wait until done or the deadline (504)."""
        self.check_document(pipeline, doc)
        accepted = time.monotonic()
        try:
            self.queue.reserve(1, interactive=True)
        except QueueFullError:
            self.metrics.rejected.labels(pipeline).inc()
            raise
        try:
            [run_id] = await anyio.to_thread.run_sync(self.store.create_runs, pipeline, [(doc.text, doc.metadata)])
        except BaseException:
            self.queue.release(1, interactive=True)
            raise
        item = WorkItem(run_id, pipeline, doc.text, interactive=True, deadline=accepted + self.settings.run_timeout_s)
        self.queue.submit([item])
        waiter = asyncio.wrap_future(item.future)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=max(0.0, item.deadline - time.monotonic()))
        except TimeoutError:
            if await anyio.to_thread.run_sync(self.store.fail, run_id, TIMEOUT):
                self.metrics.observe_failure(pipeline, "timeout")
                raise RunTimedOutError(
                    f"run `{run_id}` passed its deadline of {self.settings.run_timeout_s:g} s; stored as failed (timeout)",
                    run_id=run_id,
                ) from None
            record = self.store.get_run(run_id)  # the worker finished in the same instant
            if record.result is not None:
                return record.result
            raise RunTimedOutError(f"run `{run_id}` failed: {record.reason}", run_id=run_id) from None

    async def start_job(self, pipeline: str, docs: list[Document]) -> JobRecord:
        """Store a job and its runs as queued and hand them to the workers (503 when the backlog is full)."""
        for i, doc in enumerate(docs):
            try:
                self.check_document(pipeline, doc)
            except InputError as exc:
                raise InputError(exc.message.replace("`text`", f"`documents.{i}.text`", 1)) from None
        try:
            self.queue.reserve(len(docs), interactive=False)
        except QueueFullError:
            self.metrics.rejected.labels(pipeline).inc(len(docs))
            raise
        job_id = new_id()
        try:
            run_ids = await anyio.to_thread.run_sync(
                lambda: self.store.create_runs(pipeline, [(d.text, d.metadata) for d in docs], job_id=job_id)
            )
        except BaseException:
            self.queue.release(len(docs), interactive=False)
            raise
        self.queue.submit(
            [WorkItem(rid, pipeline, d.text, interactive=False) for rid, d in zip(run_ids, docs, strict=True)]
        )
        return self.store.get_job(job_id)

    # ------------------------------------------------------------------ adapters

    def pipelines(self) -> list[PipelineInfo]:
        return [
            PipelineInfo(
                name=name,
                stages=describe_stages(router.spec),
                adapters=[_ref(v) for v in router.adapters()],
            )
            for name, router in self.routers.items()
        ]

    def adapter_info(self, name: str) -> AdapterInfo:
        registry = self.registry
        versions = registry.versions(name)
        in_use = [
            f"{pipeline}: {_ref(v)}"
            for pipeline, router in self.routers.items()
            for v in router.adapters()
            if getattr(v, "name", None) == name
        ]
        return AdapterInfo(
            name=name,
            promoted=registry.state(name).promoted,
            in_use=in_use,
            versions=[
                AdapterVersionInfo(
                    version=v.version, ref=v.ref, kind=v.manifest.kind, method=v.manifest.method,
                    created_at=v.manifest.created_at, parent=v.manifest.parent, metrics=dict(v.manifest.metrics),
                )
                for v in versions
            ],
        )

    def adapters(self) -> list[AdapterInfo]:
        return [self.adapter_info(name) for name in self.registry.names()]

    def change_promotion(self, name: str, version: int | None) -> PromotionResult:
        """Promote ``version`` (or roll back when None), then refresh every router. Blocking."""
        registry = self.registry
        target = registry.rollback(name) if version is None else registry.promote(name, version)
        refreshed: list[str] = []
        changed: dict[str, list[str]] = {}
        for pipeline, router in self.routers.items():
            stages = router.refresh()
            refreshed.append(pipeline)
            if isinstance(stages, list) and stages:
                changed[pipeline] = [str(s) for s in stages]
        log.info("adapter %s: %s is promoted; refreshed %s; changed %s", name, target.ref, refreshed, changed)
        return PromotionResult(adapter=self.adapter_info(name), promoted=target.ref, refreshed=refreshed, changed=changed)


# --------------------------------------------------------------------------- controllers


def _service(state: State) -> ApiService:
    service: ApiService | None = state.get("service")
    if service is None:
        raise RuntimeError("the API is not started")
    return service


_ERROR_TEXT = {
    400: "invalid input; `detail` names the field",
    401: "missing or invalid API key",
    403: "not allowed (admin key needed, or promotion disabled)",
    404: "unknown pipeline, run, job, adapter or version",
    413: "request body larger than the limit",
    415: "unsupported content type",
    500: "the pipeline or the system failed (no internals in the body)",
    503: "queue full; retry after `Retry-After` seconds",
    504: "the run passed its deadline; stored as failed with reason `timeout`",
}


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_ERROR_TEXT[code], generate_examples=False)
        for code in codes
    }


class PipelinesController(Controller):
    """Pipelines, runs and batch jobs."""

    path = "/v1/pipelines"
    guards = [require_user]  # noqa: RUF012
    tags = ["runs"]  # noqa: RUF012
    security = [{_BEARER: []}]  # noqa: RUF012

    @get("/", summary="List served pipelines", tags=["pipelines"], responses=_errors(401))
    async def list_pipelines(self, service: ApiService) -> list[PipelineInfo]:
        """Names, stages and adapter versions in use of every served pipeline."""
        return await anyio.to_thread.run_sync(service.pipelines)

    @post(
        "/{name:str}/runs",
        status_code=201,
        summary="Run a pipeline on one document",
        operation_class=_RunBodyOperation,
        responses=_errors(400, 401, 404, 413, 415, 500, 503, 504),
    )
    async def create_run(self, request: Request[Any, Any, Any], name: str, service: ApiService) -> Response[RunResult]:
        """Run `name` on a JSON document or an uploaded file; waits for the result (201).

        The run is stored as `queued` before it is processed. 404 unknown pipeline, 400 bad
        input (names the field), 413 too large, 415 unsupported type, 503 queue full
        (Retry-After), 504 past the per-run deadline (stored as failed, reason `timeout`).
        """
        service.router(name)
        [doc] = await read_documents(request, many=False, limit=1)
        result = await service.run(name, doc)
        return Response(content=result, status_code=201, headers={"Location": f"/v1/runs/{result.id}"})

    @post(
        "/{name:str}/jobs",
        status_code=202,
        summary="Run a pipeline on many documents in the background",
        operation_class=_JobBodyOperation,
        responses=_errors(400, 401, 404, 413, 415, 503),
    )
    async def create_job(self, request: Request[Any, Any, Any], name: str, service: ApiService) -> Response[JobRecord]:
        """Accept a batch (JSON documents or several `file` parts); returns the job (202). Poll GET /v1/jobs/{id}."""
        service.router(name)
        docs = await read_documents(request, many=True, limit=service.settings.max_job_documents)
        job = await service.start_job(name, docs)
        return Response(content=job, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


class RunsController(Controller):
    """Stored runs and feedback on them."""

    path = "/v1/runs"
    guards = [require_user]  # noqa: RUF012
    tags = ["runs"]  # noqa: RUF012
    security = [{_BEARER: []}]  # noqa: RUF012

    @get("/{run_id:str}", summary="Get a stored run", responses=_errors(401, 404))
    async def get_run(self, run_id: str, service: ApiService) -> RunRecord:
        """The run's status, input and result (404 when unknown)."""
        return service.store.get_run(run_id)

    @post(
        "/{run_id:str}/feedback", status_code=201, summary="Give feedback on a stage of a run", tags=["feedback"],
        responses=_errors(400, 401, 404, 413),
    )
    async def add_feedback(self, run_id: str, data: FeedbackRequest, service: ApiService) -> FeedbackRecord:
        """Rating -1/0/1 and an optional correction of one stage's output; becomes training data."""
        return await anyio.to_thread.run_sync(service.store.add_feedback, run_id, data)


class JobsController(Controller):
    """Batch job progress."""

    path = "/v1/jobs"
    guards = [require_user]  # noqa: RUF012
    tags = ["runs"]  # noqa: RUF012
    security = [{_BEARER: []}]  # noqa: RUF012

    @get("/{job_id:str}", summary="Get a job's progress", responses=_errors(401, 404))
    async def get_job(self, job_id: str, service: ApiService) -> JobRecord:
        """done/total, counts per status, run ids (404 when unknown)."""
        return service.store.get_job(job_id)


AdapterName = Annotated[
    str,
    Parameter(
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,62}[A-Za-z0-9_-])?$",
        description="adapter name: letters, digits, `_`, `-`, `.`",
    ),
]


class AdaptersController(Controller):
    """The adapter registry; promotion and rollback (admin key)."""

    path = "/v1/adapters"
    guards = [require_user]  # noqa: RUF012
    tags = ["adapters"]  # noqa: RUF012
    security = [{_BEARER: []}]  # noqa: RUF012

    @get("/", summary="List adapters", responses=_errors(401, 500))
    async def list_adapters(self, service: ApiService) -> list[AdapterInfo]:
        """Names, versions, promoted version, metrics and use by the served pipelines."""
        return await anyio.to_thread.run_sync(service.adapters)

    @post(
        "/{name:str}/promote", status_code=200, guards=[require_admin], summary="Promote a version (admin)",
        responses=_errors(400, 401, 403, 404, 500),
    )
    async def promote(self, name: AdapterName, data: PromoteRequest, service: ApiService) -> PromotionResult:
        """Promote a version; every router refreshes, so the next run uses it without restart."""
        return await anyio.to_thread.run_sync(service.change_promotion, name, data.version)

    @post(
        "/{name:str}/rollback", status_code=200, guards=[require_admin], summary="Roll back a promotion (admin)",
        responses=_errors(400, 401, 403, 404, 500),
    )
    async def rollback(self, name: AdapterName, service: ApiService) -> PromotionResult:
        """Promote again the version promoted before; every router refreshes."""
        return await anyio.to_thread.run_sync(service.change_promotion, name, None)


@get("/health", tags=["operations"], summary="Liveness", sync_to_thread=False)
def health() -> Health:
    """200 while the process answers."""
    return Health(status="alive")


@get(
    "/ready", tags=["operations"], summary="Readiness", sync_to_thread=False,
    responses={503: ResponseSpec(data_container=Readiness, description="not ready", generate_examples=False)},
)
def ready(state: State) -> Response[Readiness]:
    """200 when routers are loaded, the store is open and the workers run; else 503."""
    service: ApiService | None = state.get("service")
    ok = bool(service is not None and service.routers and service.queue.started)
    body = Readiness(
        ready=ok,
        pipelines=list(service.routers) if service else [],
        queue_depth=service.queue.depth if service else 0,
    )
    return Response(content=body, status_code=200 if ok else 503)


@get("/metrics", tags=["operations"], summary="Prometheus metrics", media_type=PROMETHEUS_CONTENT_TYPE, sync_to_thread=False)
def metrics(state: State) -> Response[bytes]:
    """Runs by status, run and per-stage latency, queue depth, guardrail verdicts by action."""
    return Response(content=state.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)


@get("/", include_in_schema=False, media_type=MediaType.HTML, sync_to_thread=False)
def playground() -> str:
    """The playground page (self-contained HTML calling the JSON API)."""
    return files("loragraph.api").joinpath("playground.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- app


def create_app(
    routers: Mapping[str, RouterLike],
    settings: ApiSettings | None = None,
    *,
    registry: Any | None = None,
) -> Litestar:
    """The Litestar app serving ``routers`` (pipeline name -> router).

    The store opens (and marks runs left open by a previous process as failed) and the
    workers start when the app starts; they stop when it shuts down.
    """
    settings = settings or ApiSettings.from_env()
    routers = dict(routers)
    app_metrics = ApiMetrics()

    def startup(app: Litestar) -> None:
        store = Store(settings.resolved_db_path)
        recovered = store.recover()
        if recovered:
            log.warning("marked %d run(s) left by a previous process as failed (interrupted by restart)", recovered)
            app_metrics.failures.labels("*", "interrupted").inc(recovered)
        queue = RunQueue(
            store, routers, app_metrics,
            workers=settings.workers, queue_size=settings.queue_size, job_backlog=settings.job_backlog,
            run_timeout_s=settings.run_timeout_s, retry_after_s=settings.retry_after_s, max_batch=settings.max_batch,
        )
        app_metrics.bind_queue_depth(lambda: queue.depth)
        queue.start()
        app.state.service = ApiService(routers, settings, store, queue, app_metrics, registry)

    def shutdown(app: Litestar) -> None:
        service: ApiService | None = app.state.get("service")
        if service is None:
            return
        service.queue.stop(settings.shutdown_grace_s)
        service.store.close()
        app.state.service = None

    app = Litestar(
        route_handlers=[PipelinesController, RunsController, JobsController, AdaptersController,
                        health, ready, metrics, playground,
                        # the docs page's assets ship with loragraph: it works offline
                        create_static_files_router(path=_SWAGGER_PATH, directories=[_SWAGGER_DIR],
                                                   include_in_schema=False)],
        dependencies={"service": Provide(_service, sync_to_thread=False)},
        exception_handlers={
            LoragraphError: _on_loragraph_error,
            HTTPException: _on_http_exception,
            Exception: _on_unexpected,
        },
        on_startup=[startup],
        on_shutdown=[shutdown],
        state=State({"settings": settings, "metrics": app_metrics, "service": None}),
        request_max_body_size=settings.max_body_bytes,
        plugins=[PydanticPlugin(validate_strict=True)],  # `true` is not a version, `1.0` not a rating
        openapi_config=OpenAPIConfig(
            title="loragraph",
            version=_version(),
            description="Run pipelines of per-task LoRA adapters on one shared base; give feedback; manage adapters.",
            path="/schema",
            render_plugins=[
                SwaggerRenderPlugin(
                    js_url=f"{_SWAGGER_PATH}/swagger-ui-bundle.js",
                    css_url=f"{_SWAGGER_PATH}/swagger-ui.css",
                    standalone_preset_js_url=f"{_SWAGGER_PATH}/swagger-ui-standalone-preset.js",
                    favicon=f"<link rel='icon' type='image/png' href='{_SWAGGER_PATH}/favicon-32x32.png'>",
                )
            ],
            components=Components(
                security_schemes={
                    _BEARER: SecurityScheme(
                        type="http", scheme="bearer",
                        description="user key for runs/feedback/reads; admin key for promote/rollback",
                    )
                }
            ),
        ),
        debug=False,
    )
    _tighten_schema(app, list(routers))
    return app


def _tighten_schema(app: Litestar, pipelines: list[str]) -> None:
    """Say in the OpenAPI document what Litestar leaves out.

    - ``additionalProperties: false`` for request models with pydantic ``extra="forbid"``;
    - the served pipeline names as the ``enum`` of the ``{name}`` path parameter of the run
      and job endpoints (404 for any other name);
    - links from a created run or job to the endpoints that read it.
    """
    from litestar.openapi.spec import Link

    from loragraph.api import models

    openapi = app.openapi_schema
    schemas = (openapi.components.schemas or {}) if openapi.components else {}
    for name, schema in schemas.items():
        model = getattr(models, name, None)
        if isinstance(model, type) and getattr(model, "model_config", {}).get("extra") == "forbid":
            schema.additional_properties = False
    paths = openapi.paths or {}

    def operation_id(path: str, method: str) -> str | None:
        item = paths.get(path)
        operation = getattr(item, method, None) if item else None
        return operation.operation_id if operation else None

    targets = {
        "/v1/pipelines/{name}/runs": {
            "GetRun": ("/v1/runs/{run_id}", "get", "run_id"),
            "GiveFeedback": ("/v1/runs/{run_id}/feedback", "post", "run_id"),
        },
        "/v1/pipelines/{name}/jobs": {"GetJob": ("/v1/jobs/{job_id}", "get", "job_id")},
    }
    for path, links in targets.items():
        item = paths.get(path)
        operation = item.post if item else None
        if operation is None:
            continue
        for param in operation.parameters or []:
            if getattr(param, "name", None) == "name" and getattr(param, "schema", None) is not None and pipelines:
                param.schema.enum = list(pipelines)  # type: ignore[union-attr]
        for code, response in (operation.responses or {}).items():
            if code.startswith("2") and hasattr(response, "links"):
                response.links = {
                    link: Link(operation_id=operation_id(target, method), parameters={param: "$response.body#/id"})
                    for link, (target, method, param) in links.items()
                    if operation_id(target, method)
                }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loragraph")
    except PackageNotFoundError:  # pragma: no cover
        return "0.0.0"
