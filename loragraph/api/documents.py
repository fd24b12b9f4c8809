"""Turn an uploaded file into document text: plain text, Markdown, e-mail (.eml), PDF."""

from __future__ import annotations

import email
import email.policy
import html
import io
import re
from email.message import EmailMessage

from loragraph.api.errors import UnsupportedMediaError
from loragraph.errors import InputError

__all__ = ["SUPPORTED_TYPES", "extract_text", "media_type_of"]

SUPPORTED_TYPES: dict[str, str] = {
    "text/plain": ".txt",
    "text/markdown": ".md",
    "message/rfc822": ".eml",
    "application/pdf": ".pdf",
}
"""Content types the run endpoints accept for uploads, with their usual file suffix."""

_ALIASES = {"text/x-markdown": "text/markdown", "application/x-pdf": "application/pdf"}
_SUFFIXES = {".txt": "text/plain", ".text": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown",
             ".eml": "message/rfc822", ".pdf": "application/pdf"}
_GENERIC = {"", "application/octet-stream"}


def media_type_of(content_type: str | None, filename: str | None) -> str:
    """The supported media type of an upload, from its part header or, if generic, its file name."""
    media = (content_type or "").split(";")[0].strip().lower()
    media = _ALIASES.get(media, media)
    if media in _GENERIC and filename:
        suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        media = _SUFFIXES.get(suffix, media)
    if media not in SUPPORTED_TYPES:
        supported = ", ".join(SUPPORTED_TYPES)
        raise UnsupportedMediaError(f"`file` has unsupported type `{media or 'unknown'}`; supported: {supported}")
    return media


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"`file` is not valid UTF-8 text (byte {exc.start})") from exc


def _strip_html(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style).*?</\1>", " ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", markup)
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


def _email_text(data: bytes) -> str:
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except Exception as exc:  # the parser is lenient; this is a last resort
        raise InputError("`file` is not a readable e-mail message") from exc
    if not isinstance(msg, EmailMessage) or (not msg.keys() and not msg.get_payload()):
        raise InputError("`file` is not a readable e-mail message")
    subject = str(msg.get("subject", "") or "").strip()
    part = msg.get_body(preferencelist=("plain", "html"))
    body = ""
    if part is not None:
        try:
            content = part.get_content()
        except (LookupError, ValueError) as exc:
            raise InputError(f"`file` e-mail body cannot be decoded: {exc}") from exc
        body = _strip_html(content) if part.get_content_type() == "text/html" else str(content)
    body = body.strip()
    return f"Subject: {subject}\n\n{body}" if subject else body


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InputError("`file` is an encrypted PDF")
        return "\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()
    except InputError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InputError("`file` is not a readable PDF") from exc


def extract_text(data: bytes, content_type: str | None, filename: str | None = None) -> str:
    """The text of an uploaded document (415 for unsupported types, 400 for unreadable or empty ones)."""
    media = media_type_of(content_type, filename)
    if media == "message/rfc822":
        text = _email_text(data)
    elif media == "application/pdf":
        text = _pdf_text(data)
    else:
        text = _decode(data)
    if not text.strip():
        raise InputError(f"`file` ({media}) contains no text" + (" (a scanned PDF?)" if media.endswith("pdf") else ""))
    return text
