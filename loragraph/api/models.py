"""Request and response bodies of the HTTP API (pydantic; every field described)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loragraph.router.result import RunResult

__all__ = [
    "AdapterInfo",
    "AdapterVersionInfo",
    "Document",
    "ErrorBody",
    "FeedbackRecord",
    "FeedbackRequest",
    "Health",
    "JobRecord",
    "JobRequest",
    "JobStatus",
    "PipelineInfo",
    "PromoteRequest",
    "PromotionResult",
    "Rating",
    "Readiness",
    "RunRecord",
    "StageInfo",
    "StoredRunStatus",
]

StoredRunStatus = Literal["queued", "running", "ok", "blocked", "escalated", "error", "failed"]
JobStatus = Literal["queued", "running", "done"]
Rating = Literal[-1, 0, 1]


def _check_unicode(value: Any, path: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"`{path}` holds an invalid character (a lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key, path)
            _check_unicode(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_unicode(item, f"{path}.{i}")


class _Request(BaseModel):
    """A request body: unknown fields are refused, strings must be encodable text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _encodable(self) -> Any:
        for name in type(self).model_fields:
            _check_unicode(getattr(self, name), name)
        return self


class Document(_Request):
    """One document to run a pipeline on."""

    text: str = Field(
        min_length=1, pattern=r"\S", description="the document text (an email, a chat message, a ticket); not blank"
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="free-form JSON object stored with the run (e.g. a ticket id)"
    )


class JobRequest(_Request):
    """A batch of documents for one pipeline."""

    documents: list[Document] = Field(min_length=1, description="the documents, processed in any order")


class RunRecord(BaseModel):
    """A stored run: its state, input and (once finished) result."""

    id: str = Field(description="run id")
    pipeline: str = Field(description="pipeline name")
    status: StoredRunStatus = Field(
        description="`queued` -> `running` -> the result's status (`ok`, `blocked`, `escalated`, `error`), "
        "or `failed` (see `reason`)"
    )
    reason: str | None = Field(None, description="why a run failed: `timeout`, `interrupted by restart`, or the error")
    job_id: str | None = Field(None, description="the batch job this run belongs to, if any")
    text: str = Field(description="the document text the run was given")
    metadata: dict[str, Any] = Field(default_factory=dict, description="metadata sent with the document")
    result: RunResult | None = Field(None, description="the pipeline's result once the run finished")
    created_at: datetime = Field(description="when the run was accepted (UTC)")
    started_at: datetime | None = Field(None, description="when a worker started it (UTC)")
    finished_at: datetime | None = Field(None, description="when it finished or failed (UTC)")


class JobRecord(BaseModel):
    """Progress of a batch job."""

    id: str = Field(description="job id")
    pipeline: str = Field(description="pipeline name")
    status: JobStatus = Field(description="`queued` (nothing started), `running`, or `done` (every run finished or failed)")
    total: int = Field(description="documents in the job")
    done: int = Field(description="runs finished or failed")
    counts: dict[str, int] = Field(description="runs per stored status")
    run_ids: list[str] = Field(description="run ids in the order the documents were given")
    created_at: datetime = Field(description="when the job was accepted (UTC)")


class FeedbackRequest(_Request):
    """Feedback on one stage's output of a finished run."""

    stage: str = Field(min_length=1, description="the stage the feedback is about, e.g. `summary`")
    rating: Rating = Field(description="-1 = bad (thumbs down), 0 = neutral, 1 = good (thumbs up)")
    corrected: str | None = Field(
        None, min_length=1, max_length=100_000,
        description="the output the stage should have produced (generate: text; classify: label)",
    )
    comment: str | None = Field(None, max_length=4000, description="free-text comment")

    @field_validator("rating", mode="before")
    @classmethod
    def _not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be -1, 0 or 1, not a boolean")
        return value


class FeedbackRecord(FeedbackRequest):
    """Stored feedback."""

    model_config = ConfigDict(extra="ignore", strict=False)

    id: int = Field(description="feedback id")
    run_id: str = Field(description="the run it is about")
    created_at: datetime = Field(description="when it was given (UTC)")


class StageInfo(BaseModel):
    """One stage of a pipeline."""

    name: str = Field(description="stage name")
    kind: str = Field(description="`classify`, `tag`, `generate` or `guardrail`")
    adapter: str | None = Field(None, description="adapter reference as written in the pipeline, or None")


class PipelineInfo(BaseModel):
    """A served pipeline."""

    name: str = Field(description="pipeline name (the `{name}` of the run endpoints)")
    stages: list[StageInfo] = Field(description="stages as declared")
    adapters: list[str] = Field(description="adapter versions in use now, `name@vN`")


class AdapterVersionInfo(BaseModel):
    """One published adapter version."""

    version: int = Field(description="version number")
    ref: str = Field(description="`name@vN`")
    kind: str = Field(description="`classify`, `tag` or `generate`")
    method: str = Field(description="how it was trained: `classify`, `tag`, `sft` or `dpo`")
    created_at: datetime = Field(description="when it was published (UTC)")
    parent: int | None = Field(None, description="the version training started from")
    metrics: dict[str, float] = Field(description="held-out evaluation metrics")


class AdapterInfo(BaseModel):
    """An adapter in the registry."""

    name: str = Field(description="adapter name")
    promoted: int | None = Field(None, description="the version `name` resolves to")
    versions: list[AdapterVersionInfo] = Field(description="published versions, oldest first")
    in_use: list[str] = Field(description="`pipeline: name@vN` for every served pipeline using this adapter")


class PromoteRequest(_Request):
    """Which version to promote."""

    version: int = Field(ge=1, description="version number to promote, e.g. `3` for `name@v3`")


class PromotionResult(BaseModel):
    """The adapter after a promotion or rollback, and the pipelines that now use it."""

    adapter: AdapterInfo = Field(description="the adapter's registry state after the change")
    promoted: str = Field(description="the version now promoted, `name@vN`")
    refreshed: list[str] = Field(description="pipelines whose routers re-resolved their adapters")
    changed: dict[str, list[str]] = Field(
        default_factory=dict, description="pipeline -> stages now using a different version"
    )


class Health(BaseModel):
    """Liveness."""

    status: Literal["alive"] = Field(description="always `alive` when the process answers")


class Readiness(BaseModel):
    """Readiness."""

    ready: bool = Field(description="routers loaded, store open and workers running")
    pipelines: list[str] = Field(description="pipelines served")
    queue_depth: int = Field(description="runs waiting for a worker")


class ErrorBody(BaseModel):
    """Every error answer."""

    status_code: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong; names the field when a field is wrong")
    error: str = Field(description="error class, e.g. `NotFoundError`")
