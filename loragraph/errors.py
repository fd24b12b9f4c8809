"""One error hierarchy for loragraph.

User mistakes (``UserError``: a bad config, a broken dataset line, a missing adapter) are
kept apart from runtime failures (``RuntimeFailure``: a model that will not load, a
checksum that does not match, a step that crashed). The API maps the first to 4xx and
the second to 5xx. Every error can say *where* it happened: a ``file:line``, a field,
an ``adapter@version`` or a stage.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "DataError",
    "InputError",
    "IntegrityError",
    "LoragraphError",
    "ModelLoadError",
    "NotFoundError",
    "PipelineValidationError",
    "Problem",
    "QuantizationUnavailableError",
    "RunTimeout",
    "RuntimeFailure",
    "StepError",
    "UserError",
]


class LoragraphError(Exception):
    """Base of every loragraph error. ``str(err)`` is ``"<where>: <message>"``."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class UserError(LoragraphError):
    """The user's input is wrong; fixing the input fixes it (HTTP 4xx)."""


class ConfigError(UserError):
    """A config file, YAML document or command-line flag is invalid."""


class DataError(UserError):
    """A dataset line is invalid; ``where`` is ``"file.jsonl:LINE"``."""


class InputError(UserError):
    """A document or request is invalid (empty, too large, wrong type)."""


class NotFoundError(UserError):
    """An adapter, version, pipeline or run does not exist."""


@dataclass(frozen=True)
class Problem:
    """One problem found by static validation: where it is, which field, what is wrong."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class PipelineValidationError(UserError):
    """A pipeline failed static validation; ``problems`` lists every problem at once."""

    def __init__(self, problems: list[Problem], *, where: str | None = None) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s):\n{lines}", where=where)


class RuntimeFailure(LoragraphError):
    """loragraph or its environment failed while doing something valid (HTTP 5xx)."""


class ModelLoadError(RuntimeFailure):
    """A base model could not be loaded or prepared."""


class QuantizationUnavailableError(RuntimeFailure):
    """The requested quantization cannot run here; the message names the alternatives."""


class IntegrityError(RuntimeFailure):
    """Stored weights do not match their checksums, or were trained on another base."""


class RunTimeout(RuntimeFailure):
    """A run passed its deadline (checked between steps)."""


class StepError(RuntimeFailure):
    """A pipeline step failed; ``stage`` names it."""

    def __init__(self, message: str, *, stage: str) -> None:
        self.stage = stage
        super().__init__(message, where=f"stage `{stage}`")
