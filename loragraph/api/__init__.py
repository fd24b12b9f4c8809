"""loragraph.api: the Litestar HTTP API, its SQLite run/feedback store and the playground.

``create_app(routers, settings)`` builds the app for ``{pipeline name: router}``;
``loragraph serve PIPELINE.yaml`` runs it under uvicorn (``--echo`` serves the weightless
``EchoRouter`` instead, to try the API and playground).

Endpoints (OpenAPI 3.1 at ``/schema/openapi.json``, Swagger UI at ``/schema``)::

    POST /v1/pipelines/{name}/runs      one document: JSON {text, metadata?} or multipart `file`
                                        (.txt .md .eml .pdf) -> RunResult (201)
    POST /v1/pipelines/{name}/jobs      many documents -> job (202); GET /v1/jobs/{id} progress
    GET  /v1/runs/{id}                  stored run: status, reason, input, result
    POST /v1/runs/{id}/feedback         {stage, rating: -1|0|1, corrected?, comment?} (201)
    GET  /v1/pipelines                  names, stages, adapter versions in use
    GET  /v1/adapters                   registry: versions, promoted, metrics, use
    POST /v1/adapters/{name}/promote    {version} (admin key); every router refreshes
    POST /v1/adapters/{name}/rollback   (admin key); every router refreshes
    GET  /health /ready /metrics        liveness, readiness, Prometheus
    GET  /                              the playground (one self-contained page)

Choices:

- Rating is -1 (bad), 0 (neutral), 1 (good): thumbs in the playground. Export keeps the
  latest feedback per (run, stage); SFT targets are corrections or outputs rated 1.
- An accepted run is stored ``queued`` before a worker sees it. At start-up, runs left
  ``queued``/``running`` by a previous process are marked ``failed`` with reason
  ``interrupted by restart`` (never lost, never run twice behind the client's back).
- Keys: no user keys = ``/v1`` open; with keys, ``Authorization: Bearer <key>``. Promotion
  and rollback need an admin key; with none configured they are disabled (403).
- A router that returns a result (even status ``error``) gives 201 and the stored status
  of the result; a router that raises gives 500 (stored ``failed``); past the per-run
  deadline the run is stored ``failed`` with reason ``timeout`` and the client gets 504.
- Errors: ``{"status_code", "detail", "error"}``; ``UserError`` -> 400 (404 for
  ``NotFoundError``), 413 too large, 415 unsupported type, 503 + ``Retry-After`` when the
  queue is full, ``RuntimeFailure`` -> 500. Details name the field in backticks and never
  hold a traceback or a filesystem path.
"""

from loragraph.api.app import ApiService, create_app
from loragraph.api.runner import RouterLike
from loragraph.api.settings import ApiSettings
from loragraph.api.store import ExportSummary, FeedbackItem, Store, export_feedback

__all__ = [
    "ApiService",
    "ApiSettings",
    "ExportSummary",
    "FeedbackItem",
    "RouterLike",
    "Store",
    "create_app",
    "export_feedback",
]
