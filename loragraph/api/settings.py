"""Settings of the API server: where the store lives, keys, limits, queue and timeouts."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ApiSettings"]


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class ApiSettings(BaseModel):
    """Everything the API server can be told; ``from_env`` reads the ``LORAGRAPH_*`` variables.

    Keys: with no ``api_keys`` the run and feedback endpoints are open; with some, every
    ``/v1`` request needs ``Authorization: Bearer <key>`` (an admin key also works).
    Promotion and rollback need an ``admin_keys`` key; with none configured they are
    disabled (403), never open.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    db_path: Path | None = Field(
        None, description="SQLite store; default `$LORAGRAPH_HOME/loragraph.db` (env `LORAGRAPH_DB`)"
    )
    registry_root: Path | None = Field(
        None, description="adapter registry root; default `$LORAGRAPH_HOME/adapters`"
    )
    api_keys: list[str] = Field(
        default_factory=list, repr=False,
        description="user keys for runs, jobs, feedback and reads (env `LORAGRAPH_API_KEYS`, comma-separated)",
    )
    admin_keys: list[str] = Field(
        default_factory=list, repr=False,
        description="admin keys for promote/rollback (env `LORAGRAPH_ADMIN_KEYS`); none = promotion disabled",
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="largest request body; larger -> 413")
    queue_size: int = Field(64, ge=1, description="interactive runs that may wait for a worker; more -> 503")
    job_backlog: int = Field(10_000, ge=1, description="batch-job documents that may wait; more -> 503")
    max_job_documents: int = Field(1000, ge=1, description="most documents in one batch job")
    workers: int = Field(2, ge=1, le=256, description="threads calling `router.run` concurrently")
    max_batch: int = Field(8, ge=1, le=256, description="most runs of one pipeline a worker hands to `run_many` at once")
    run_timeout_s: float = Field(60.0, gt=0, description="per-run deadline; past it the run fails with reason `timeout` (504)")
    retry_after_s: int = Field(1, ge=1, description="`Retry-After` seconds sent with a 503")
    shutdown_grace_s: float = Field(10.0, ge=0, description="how long shutdown waits for running runs")

    @property
    def resolved_db_path(self) -> Path:
        """``db_path`` or ``$LORAGRAPH_HOME/loragraph.db``."""
        if self.db_path is not None:
            return self.db_path
        from loragraph.adapters.base import loragraph_home  # imports torch: only when needed

        return loragraph_home() / "loragraph.db"

    @classmethod
    def from_env(cls, **overrides: object) -> ApiSettings:
        """Settings from ``LORAGRAPH_DB``, ``LORAGRAPH_API_KEYS``, ``LORAGRAPH_ADMIN_KEYS``; overrides win."""
        values: dict[str, object] = {}
        if os.environ.get("LORAGRAPH_DB"):
            values["db_path"] = Path(os.environ["LORAGRAPH_DB"])
        if keys := _split(os.environ.get("LORAGRAPH_API_KEYS")):
            values["api_keys"] = keys
        if keys := _split(os.environ.get("LORAGRAPH_ADMIN_KEYS")):
            values["admin_keys"] = keys
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
