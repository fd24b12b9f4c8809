"""Errors of the HTTP edge and their mapping to status codes and safe bodies.

Room errors keep their meaning: ``NotFoundError`` -> 404, other ``UserError`` -> 400,
``RuntimeFailure`` -> 500. The API adds a few of its own (415, 503 with Retry-After,
504). Bodies are ``{"status_code", "detail", "error"}``; a detail never carries a stack
trace, and absolute filesystem paths are replaced by ``<path>``.
"""

from __future__ import annotations

import re

from loragraph.errors import InputError, LoragraphError, NotFoundError, RuntimeFailure, UserError

__all__ = [
    "AuthError",
    "QueueFullError",
    "RunTimedOutError",
    "UnsupportedMediaError",
    "http_status",
    "scrub",
]


class UnsupportedMediaError(InputError):
    """The request or an uploaded file has a content type the API cannot read (415)."""


class QueueFullError(RuntimeFailure):
    """The bounded run queue is full; retry after ``retry_after`` seconds (503)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class RunTimedOutError(RuntimeFailure):
    """A run passed its deadline; it is stored as failed with reason `timeout` (504)."""

    def __init__(self, message: str, *, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(message)


class AuthError(UserError):
    """Missing or wrong API key (401) or not allowed (403)."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


def http_status(err: LoragraphError) -> int:
    """The HTTP status code of a loragraph error."""
    if isinstance(err, AuthError):
        return err.status
    if isinstance(err, UnsupportedMediaError):
        return 415
    if isinstance(err, NotFoundError):
        return 404
    if isinstance(err, UserError):
        return 400
    if isinstance(err, QueueFullError):
        return 503
    if isinstance(err, RunTimedOutError):
        return 504
    return 500


# absolute POSIX paths with at least two components, or Windows drive paths
_PATH_RE = re.compile(r"(?<![\w.@:/])(?:/[\w.\-~+]+){2,}/?|\b[A-Za-z]:\\[^\s'\"`]+")
_TRACE_RE = re.compile(r"Traceback \(most recent call last\):.*", re.DOTALL)


def scrub(message: str, *, limit: int = 2000) -> str:
    """Remove absolute paths and tracebacks from a message meant for a client."""
    text = _TRACE_RE.sub("", message)
    text = _PATH_RE.sub("<path>", text)
    return text[:limit]
