"""The versioned adapter registry on disk: publish, resolve, promote, rollback, verify.

Layout under the root (default ``loragraph_home() / "adapters"``)::

    <root>/<name>/v<N>/adapter_config.json        standard PEFT folder, loadable by
    <root>/<name>/v<N>/adapter_model.safetensors  peft, vLLM and other engines
    <root>/<name>/v<N>/head.safetensors           classify/tag heads only
    <root>/<name>/v<N>/manifest.json              Manifest (checksums of every file)
    <root>/<name>/state.json                      {"promoted": N, "history": [...]}

Versions are immutable: publishing copies the staged folder into a temporary sibling,
checksums every file (sha256), writes the manifest, makes the files read-only and renames
the folder to ``v<N>`` under a file lock, so two publishers never get the same ``N`` and a
failure leaves neither a version nor a temporary folder. ``state.json`` is replaced
atomically and keeps the promotion history, so ``rollback`` returns to the version
promoted before. Only ``.safetensors`` weights are accepted; nothing is ever unpickled.

References: ``"intent"`` (the promoted version), ``"intent@v3"`` or ``"intent@3"`` (pinned).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loragraph._files import file_lock
from loragraph.adapters.base import Quantization, loragraph_home
from loragraph.adapters.head_config import HEAD_FILE, HeadConfig
from loragraph.errors import ConfigError, IntegrityError, NotFoundError

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "MANIFEST_FILE",
    "STATE_FILE",
    "AdapterKind",
    "AdapterVersion",
    "Manifest",
    "Method",
    "Registry",
    "RegistryState",
    "StateEvent",
    "format_ref",
    "parse_ref",
    "sha256_file",
    "verify_version",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"
_LOCK_FILE = ".lock"
_TMP_PREFIX = ".tmp-"

AdapterKind = Literal["classify", "tag", "generate"]
Method = Literal["classify", "tag", "sft", "dpo"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REF_RE = re.compile(r"^(?P<name>[^@\s]+)(?:@v?(?P<version>\d+))?$")
# suffixes of files that can hold weights; only `.safetensors` is ever accepted
_UNSAFE_WEIGHTS = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".h5", ".msgpack", ".gguf", ".onnx"}


def _check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith("."):
        raise ConfigError(
            f"`{field}` {name!r} is not a valid adapter name; expected letters, digits, `_`, `-`, `.` "
            "(starting with a letter or digit, at most 64 characters)"
        )
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"intent"`` -> ``("intent", None)``; ``"intent@v3"`` / ``"intent@3"`` -> ``("intent", 3)``."""
    match = _REF_RE.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise ConfigError(
            f"adapter reference {ref!r} is not valid; expected `name` (promoted), `name@v3` or `name@3` (pinned)"
        )
    name = match.group("name")
    try:
        _check_name(name)
    except ConfigError as exc:
        raise ConfigError(f"adapter reference {ref!r}: {exc.message}") from exc
    version = match.group("version")
    if version is not None and int(version) < 1:
        raise ConfigError(f"adapter reference {ref!r}: versions start at 1")
    return name, (int(version) if version is not None else None)


def format_ref(name: str, version: int) -> str:
    """``("intent", 3)`` -> ``"intent@v3"``."""
    return f"{name}@v{version}"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- models


class Manifest(BaseModel):
    """What a published adapter version is: task, labels, base, data, metrics, file checksums."""

    # NaN metrics (e.g. F1 on a split without entities) must survive a round trip on disk
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    name: str = Field(description="adapter name, e.g. `intent`")
    version: int = Field(ge=1, description="version number, assigned by the registry at publish time")
    kind: AdapterKind = Field(description="stage kind it serves: `classify`, `tag` or `generate`")
    labels: list[str] = Field(
        default_factory=list,
        description="classify: class labels; tag: entity types; generate: empty",
    )
    head: HeadConfig | None = Field(None, description="the head of a classify/tag adapter; None for generate")
    prompt: str | None = Field(
        None, description="generate: the jinja prompt template it was trained with (rendered by `render_prompt`)"
    )
    system: str | None = Field(None, description="generate: the system message it was trained with, if any")
    base_name: str = Field(description="the base it was trained on (`BaseSpec.name`)")
    base_fingerprint: str = Field(description="`LoadedBase.fingerprint` of that base; mounting checks it")
    quantization: Quantization = Field(description="quantization of the base it was trained on: `nf4`, `int8`, `bf16`, `fp32`")
    data_hash: str = Field("", description="sha256 of the training data, to tell which data made this version")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="training settings (lr, rank, epochs, ...)")
    metrics: dict[str, float] = Field(default_factory=dict, description="held-out evaluation metrics, e.g. `accuracy`")
    files: dict[str, str] = Field(default_factory=dict, description="every file of the version -> its sha256 (hex)")
    created_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC), description="when the version was published (UTC)"
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="classify used as a guardrail: flagged probability at or above which it flags, chosen on "
        "the validation split at training (`choose_threshold`); used where a guardrail gives no `threshold`",
    )
    parent: int | None = Field(None, description="the version training started from, or None")
    method: Method = Field(description="how it was trained: `classify`, `tag`, `sft` or `dpo`")

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        _check_name(self.name)
        if self.kind in ("classify", "tag"):
            if self.head is None:
                raise ValueError(f"`head` is required for a `{self.kind}` adapter")
            if self.head.kind != self.kind:
                raise ValueError(f"`head.kind` is `{self.head.kind}` but `kind` is `{self.kind}`")
            if list(self.head.labels) != list(self.labels):
                raise ValueError(f"`labels` {self.labels} must equal `head.labels` {self.head.labels}")
            if self.method != self.kind:
                raise ValueError(f"`method` must be `{self.kind}` for a `{self.kind}` adapter, got `{self.method}`")
        else:
            if self.head is not None:
                raise ValueError("`head` must be None for a `generate` adapter")
            if self.labels:
                raise ValueError(f"`labels` must be empty for a `generate` adapter, got {self.labels}")
            if self.method not in ("sft", "dpo"):
                raise ValueError(f"`method` must be `sft` or `dpo` for a `generate` adapter, got `{self.method}`")
        if self.threshold is not None and self.kind != "classify":
            raise ValueError(f"`threshold` is only for `classify` adapters, not `{self.kind}`")
        for filename in self.files:
            if "/" in filename or filename.startswith(".") or Path(filename).suffix in _UNSAFE_WEIGHTS:
                raise ValueError(f"`files` entry {filename!r} is not allowed (flat names, `.safetensors` weights only)")
        return self


@dataclass(frozen=True)
class AdapterVersion:
    """One published adapter version on disk."""

    name: str
    version: int
    path: Path
    manifest: Manifest

    @property
    def ref(self) -> str:
        """``"intent@v3"``."""
        return format_ref(self.name, self.version)

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def __str__(self) -> str:
        return self.ref


class StateEvent(BaseModel):
    """One change of the promoted version."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="the version promoted by this event")
    action: Literal["publish", "promote", "rollback"] = Field(description="what promoted it")
    at: datetime = Field(default_factory=lambda: datetime.now(UTC), description="when (UTC)")


class RegistryState(BaseModel):
    """``state.json`` of one adapter: the promoted version and how it got there."""

    model_config = ConfigDict(extra="forbid")

    promoted: int | None = Field(None, description="the version `name` resolves to")
    history: list[StateEvent] = Field(default_factory=list, description="promotions and rollbacks, oldest first")

    def stack(self) -> list[int]:
        """Promoted versions as a stack: promote/publish push, rollback pops."""
        out: list[int] = []
        for event in self.history:
            if event.action == "rollback":
                if out:
                    out.pop()
                if not out or out[-1] != event.version:
                    out.append(event.version)
            elif not out or out[-1] != event.version:
                out.append(event.version)
        return out


# --------------------------------------------------------------------------- verify


def _refuse_unsafe(path: Path, where: str) -> None:
    if path.suffix in _UNSAFE_WEIGHTS:
        raise IntegrityError(
            f"`{path.name}` is a pickle-capable weights file; only `.safetensors` weights are accepted",
            where=where,
        )


def verify_version(version: AdapterVersion) -> None:
    """Check a version folder against its manifest; raise ``IntegrityError`` on any difference.

    Every listed file must exist with its sha256; no other file may exist (an extra
    weights file could be loaded in place of the checked one); PEFT config + safetensors
    weights must be present, and the head for classify/tag.
    """
    where = version.ref
    folder = version.path
    if not folder.is_dir():
        raise IntegrityError("version folder is missing", where=f"{where} ({folder})")
    listed = dict(version.manifest.files)
    for required in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) + ((HEAD_FILE,) if version.manifest.head else ()):
        if required not in listed:
            raise IntegrityError(f"manifest `files` does not list `{required}`", where=where)
    present = {p.name: p for p in folder.iterdir()}
    for name, path in sorted(present.items()):
        if name == MANIFEST_FILE:
            continue
        _refuse_unsafe(path, where)
        if name not in listed:
            raise IntegrityError(f"unexpected file `{name}` is not in the manifest", where=where)
        if not path.is_file() or path.is_symlink():
            raise IntegrityError(f"`{name}` is not a plain file", where=where)
    for name, expected in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise IntegrityError(f"file `{name}` listed in the manifest is missing", where=where)
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"checksum of `{name}` differs from the manifest: expected sha256 {expected[:16]}..., got {actual[:16]}...",
                where=where,
            )


# --------------------------------------------------------------------------- registry


def _rmtree(path: Path) -> None:
    def _writable(func: Any, target: str, _exc: Any) -> None:  # shutil.rmtree onerror (3.11)
        with contextlib.suppress(OSError):
            os.chmod(target, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
            func(target)

    if path.exists():
        shutil.rmtree(path, onerror=_writable)


def _write_json_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class Registry:
    """Published adapter versions under ``root`` (default ``loragraph_home() / "adapters"``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else loragraph_home() / "adapters"

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # ------------------------------------------------------------------ read

    def _dir(self, name: str) -> Path:
        return self.root / _check_name(name)

    def names(self) -> list[str]:
        """Adapter names with at least one published version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _NAME_RE.match(p.name) and self._version_numbers(p.name)
        )

    def _version_numbers(self, name: str) -> list[int]:
        folder = self._dir(name)
        if not folder.is_dir():
            return []
        nums = []
        for p in folder.iterdir():
            if p.is_dir() and re.fullmatch(r"v\d+", p.name) and (p / MANIFEST_FILE).is_file():
                nums.append(int(p.name[1:]))
        return sorted(nums)

    def _load(self, name: str, version: int) -> AdapterVersion:
        path = self._dir(name) / f"v{version}"
        where = f"{path / MANIFEST_FILE}"
        try:
            manifest = Manifest.model_validate_json((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NotFoundError(self._missing_version_message(name, version)) from exc
        except ValidationError as exc:
            raise IntegrityError(f"manifest is invalid: {exc}", where=where) from exc
        if manifest.name != name or manifest.version != version:
            raise IntegrityError(
                f"manifest says `{format_ref(manifest.name, manifest.version)}` but lives at `{format_ref(name, version)}`",
                where=where,
            )
        return AdapterVersion(name=name, version=version, path=path, manifest=manifest)

    def _missing_version_message(self, name: str, version: int) -> str:
        have = self._version_numbers(name)
        listed = ", ".join(f"v{n}" for n in have) or "none"
        return f"adapter `{name}` has no version v{version}; published versions: {listed}"

    def _require(self, name: str) -> list[int]:
        nums = self._version_numbers(name)
        if not nums:
            known = ", ".join(f"`{n}`" for n in self.names()) or "none"
            raise NotFoundError(f"no adapter named `{name}` in {self.root}; published adapters: {known}")
        return nums

    def versions(self, name: str) -> list[AdapterVersion]:
        """All versions of ``name``, oldest first (``NotFoundError`` when there are none)."""
        return [self._load(name, n) for n in self._require(name)]

    def get(self, name: str, version: int) -> AdapterVersion:
        """One version (``NotFoundError`` listing what exists)."""
        nums = self._require(name)
        if version not in nums:
            raise NotFoundError(self._missing_version_message(name, version))
        return self._load(name, version)

    def state(self, name: str) -> RegistryState:
        """``state.json`` of ``name`` (empty when absent)."""
        path = self._dir(name) / STATE_FILE
        try:
            return RegistryState.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return RegistryState()
        except ValidationError as exc:
            raise IntegrityError(f"state is invalid: {exc}", where=str(path)) from exc

    def promoted(self, name: str) -> AdapterVersion:
        """The promoted version of ``name``."""
        self._require(name)
        state = self.state(name)
        if state.promoted is None:
            raise NotFoundError(f"adapter `{name}` has no promoted version; run `loragraph adapters promote {name}@vN`")
        return self.get(name, state.promoted)

    def resolve(self, ref: str | AdapterVersion) -> AdapterVersion:
        """``"intent"`` -> the promoted version; ``"intent@v3"`` / ``"intent@3"`` -> that version."""
        if isinstance(ref, AdapterVersion):
            return ref
        name, version = parse_ref(ref)
        return self.promoted(name) if version is None else self.get(name, version)

    def verify(self, version: AdapterVersion | str) -> AdapterVersion:
        """Check checksums and files of a version (``IntegrityError``); return it."""
        resolved = self.resolve(version)
        verify_version(resolved)
        return resolved

    # ------------------------------------------------------------------ write

    def _save_state(self, name: str, state: RegistryState) -> None:
        _write_json_atomic(self._dir(name) / STATE_FILE, state.model_dump_json(indent=2) + "\n")

    def promote(self, name: str, version: int) -> AdapterVersion:
        """Make ``version`` the one ``name`` resolves to (after verifying it)."""
        self._require(name)  # an unknown name must not leave a folder behind
        with file_lock(self._dir(name) / _LOCK_FILE):
            target = self.get(name, version)
            verify_version(target)
            state = self.state(name)
            if state.promoted != version:
                state.history.append(StateEvent(version=version, action="promote"))
                state.promoted = version
                self._save_state(name, state)
            return target

    def rollback(self, name: str) -> AdapterVersion:
        """Promote again the version promoted before the current one."""
        self._require(name)  # an unknown name must not leave a folder behind
        with file_lock(self._dir(name) / _LOCK_FILE):
            self._require(name)
            state = self.state(name)
            stack = state.stack()
            if len(stack) < 2:
                current = f"v{state.promoted}" if state.promoted else "none"
                raise ConfigError(
                    f"adapter `{name}` has no earlier promoted version to roll back to (promoted: {current})"
                )
            previous = stack[-2]
            target = self.get(name, previous)
            verify_version(target)
            state.history.append(StateEvent(version=previous, action="rollback"))
            state.promoted = previous
            self._save_state(name, state)
            return target

    def publish(
        self, name: str, staged_dir: str | Path, manifest_fields: Mapping[str, Any], *, promote: bool | None = None
    ) -> AdapterVersion:
        """Publish the PEFT folder ``staged_dir`` as the next version of ``name``; atomic.

        ``manifest_fields`` are the Manifest fields except ``name``, ``version`` and
        ``files`` (the registry sets them). The first version is promoted; later ones only
        when ``promote=True``. The staged folder is copied, never moved or changed.
        """
        _check_name(name)
        fields = dict(manifest_fields)
        for key in ("version", "files"):
            if key in fields:
                raise ConfigError(f"`manifest_fields.{key}` is set by the registry; leave it out")
        if fields.pop("name", name) != name:
            raise ConfigError(f"`manifest_fields.name` {manifest_fields['name']!r} differs from `name` {name!r}")
        if isinstance(fields.get("head"), HeadConfig):
            fields["head"] = fields["head"].model_dump()
        staged = Path(staged_dir)
        files = self._staged_files(staged, fields)
        # validate everything that does not depend on N before copying anything
        try:
            Manifest.model_validate({**fields, "name": name, "version": 1, "files": dict.fromkeys(files, "")})
        except ValidationError as exc:
            raise ConfigError(f"manifest fields are invalid: {exc}", where=f"publish `{name}`") from exc

        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            checksums: dict[str, str] = {}
            for filename in files:
                shutil.copyfile(staged / filename, tmp / filename)
                checksums[filename] = sha256_file(tmp / filename)
            with file_lock(folder / _LOCK_FILE):
                existing = self._version_numbers(name)
                number = (max(existing) + 1) if existing else 1
                parent = fields.get("parent")
                if parent is not None and parent not in existing:
                    listed = ", ".join(f"v{n}" for n in existing) or "none"
                    raise ConfigError(
                        f"`parent` v{parent} is not a published version of `{name}`; published: {listed}"
                    )
                manifest = Manifest.model_validate(
                    {**fields, "name": name, "version": number, "files": checksums}
                )
                (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
                for path in tmp.iterdir():
                    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
                state = self.state(name)
                if promote or (promote is None and state.promoted is None):
                    state.history.append(StateEvent(version=number, action="publish"))
                    state.promoted = number
                final = folder / f"v{number}"
                os.rename(tmp, final)  # fails rather than overwrite: versions are immutable
                try:
                    self._save_state(name, state)
                except BaseException:
                    _rmtree(final)
                    raise
        except BaseException:
            _rmtree(tmp)
            raise
        return AdapterVersion(name=name, version=number, path=final, manifest=manifest)

    @staticmethod
    def _staged_files(staged: Path, fields: Mapping[str, Any]) -> list[str]:
        where = str(staged)
        if not staged.is_dir():
            raise NotFoundError("staged adapter folder does not exist", where=where)
        files: list[str] = []
        for path in sorted(staged.iterdir()):
            if path.name == MANIFEST_FILE:
                raise ConfigError(f"staged folder must not contain `{MANIFEST_FILE}`; the registry writes it", where=where)
            if path.is_dir():
                raise ConfigError(
                    f"staged folder holds a subfolder `{path.name}`; save the adapter as `default` "
                    "(`save_pretrained(dir)` with one adapter) or pass the subfolder itself",
                    where=where,
                )
            if path.name.startswith("."):
                continue
            if path.suffix in _UNSAFE_WEIGHTS:
                raise IntegrityError(
                    f"`{path.name}` is a pickle-capable weights file; save with safetensors "
                    "(`save_pretrained(..., safe_serialization=True)`)",
                    where=where,
                )
            if path.is_symlink() or not path.is_file():
                raise ConfigError(f"`{path.name}` is not a plain file", where=where)
            files.append(path.name)
        need = [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
        if fields.get("kind") in ("classify", "tag"):
            need.append(HEAD_FILE)
        missing = [f for f in need if f not in files]
        if missing:
            raise ConfigError(f"staged folder lacks {', '.join(f'`{m}`' for m in missing)}; has {files}", where=where)
        return files
