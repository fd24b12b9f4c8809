"""Find and redact personal data (PII) in customer messages and agent replies.

Deterministic, regex based, no weights. Detected types:

- ``EMAIL``: ``maria.lopez@example.com``;
- ``CARD``: payment card numbers, 13-19 digits with spaces or dashes, kept only when the
  Luhn checksum holds (so order numbers and other long digit runs are not redacted);
- ``IBAN``: international bank account numbers, kept only when the ISO 13616 mod-97
  checksum holds;
- ``ACCOUNT``: account numbers introduced by a word like ``account``/``Konto``/``compte``/
  ``cuenta``/``conto`` (number part only);
- ``PHONE``: phone numbers with a ``+`` prefix or an area code in parentheses, or
  9-15 digits in separated groups (dates such as ``2026-11-02`` and ids such as
  ``ORD-2024-11873`` are not phones);
- ``ADDRESS``: postal addresses where detectable: English (``221B Baker Street, London
  NW1 6XE``), German (``Hauptstraße 12, 10115 Berlin``), French (``12 rue de la Paix,
  75002 Paris``), Spanish/Italian (``Calle Mayor 5``, ``Via Roma 10, 00184 Roma``).

``find_pii(text)`` returns non-overlapping spans (char offsets, end exclusive);
``redact(text)`` replaces them by ``[TYPE]`` placeholders; ``pii_not_in(reply, source)``
returns the PII of a reply that does not occur in the source text (the customer's own
message): the deterministic half of the output guardrail's leak check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PII_TYPES",
    "PiiSpan",
    "PiiType",
    "Redaction",
    "find_pii",
    "iban_valid",
    "luhn_valid",
    "pii_not_in",
    "redact",
]

PiiType = Literal["EMAIL", "CARD", "IBAN", "ACCOUNT", "PHONE", "ADDRESS"]
PII_TYPES: tuple[str, ...] = ("EMAIL", "CARD", "IBAN", "ACCOUNT", "PHONE", "ADDRESS")
"""Detected types, in priority order: an earlier type wins an overlap."""


class PiiSpan(BaseModel):
    """One piece of personal data found in a text."""

    model_config = ConfigDict(frozen=True)

    type: PiiType = Field(description="kind of personal data: EMAIL, CARD, IBAN, ACCOUNT, PHONE or ADDRESS")
    text: str = Field(description="the exact text of the span")
    start: int = Field(ge=0, description="char offset of the first character")
    end: int = Field(ge=0, description="char offset after the last character (exclusive)")

    @property
    def key(self) -> str:
        """Normalised value used to compare PII across texts (see ``pii_not_in``)."""
        return _normalise(self.type, self.text)


class Redaction(BaseModel):
    """A redacted text and the spans (of the original text) that were replaced."""

    text: str = Field(description="the text with every span replaced by its `[TYPE]` placeholder")
    spans: list[PiiSpan] = Field(default_factory=list, description="the replaced spans, offsets in the ORIGINAL text")

    @property
    def changed(self) -> bool:
        """True when at least one span was replaced."""
        return bool(self.spans)


# --------------------------------------------------------------------------- checksums


def luhn_valid(digits: str) -> bool:
    """Luhn checksum of a digit string (payment card numbers)."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 mod-97 checksum of an IBAN (spaces ignored, case-insensitive)."""
    value = re.sub(r"\s+", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", value):
        return False
    rearranged = value[4:] + value[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


# --------------------------------------------------------------------------- patterns

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_ACCOUNT = re.compile(
    r"(?i)\b(?:account|acct|konto|kontonummer|compte|cuenta|conto)"
    r"(?:\s+(?:number|no\.?|nr\.?|num(?:ber|ero|éro)?|n[°º]\.?))?\s*[:#]?\s*"
    r"(?P<num>\d[\d -]{4,22}\d)(?![\w])"
)
_PHONE = re.compile(
    r"(?<![\w#/.-])"
    r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|\(\d{2,5}\)[ .-]?\d{2,4}(?:[ .-]?\d{2,4}){1,3}"
    r"|\d{2,4}(?:[ .-]\d{2,4}){2,4})"
    r"(?![\w-])"
)
_CAP = r"[A-Z][a-zà-ÿ'-]+"
_EN_SUFFIX = (
    r"(?:Street|St\.|Avenue|Ave\.|Road|Rd\.|Lane|Ln\.|Boulevard|Blvd\.|Drive|Dr\.|Way|Court|Ct\.|"
    r"Place|Pl\.|Square|Terrace|Close|Crescent|Gardens|Row|Parkway|Highway)"
)
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}"
_CITY_TAIL = rf"(?:,?\s+(?:{_CAP}\s?){{0,2}}(?:{_UK_POSTCODE}|[A-Z]{{2}}\s\d{{5}}|\d{{5}})|,\s*\d{{4,5}}\s+{_CAP}(?:\s{_CAP})?|,\s*{_CAP}(?:\s{_CAP})?(?:,?\s+(?:{_UK_POSTCODE}|[A-Z]{{2}}\s\d{{5}}|\d{{5}}))?)?"
_ADDRESS_PATTERNS = [
    # 221B Baker Street, London NW1 6XE / 1600 Amphitheatre Parkway, Mountain View, CA 94043
    re.compile(rf"\b\d{{1,5}}[A-Za-z]?\s+(?:{_CAP}\s+){{1,3}}{_EN_SUFFIX}(?![\w]){_CITY_TAIL}"),
    # Hauptstraße 12, 10115 Berlin / Lindenweg 3a
    re.compile(
        rf"\b[A-ZÄÖÜ][a-zäöüß-]*(?:straße|strasse|str\.|weg|allee|platz|gasse|ring|damm)\s+\d{{1,4}}[a-z]?"
        rf"(?:,\s*\d{{5}}\s+{_CAP}(?:\s{_CAP})?)?"
    ),
    # 12 rue de la Paix, 75002 Paris
    re.compile(
        r"\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai)"
        r"(?:\s+(?:de|du|des|la|le|l'|d')?\s*[A-Za-zÀ-ÿ'-]+){1,4}?"
        rf"(?:,\s*\d{{5}}\s+{_CAP}(?:\s{_CAP})?|(?=[,.;!?\n]|$))"
    ),
    # Calle Mayor 5, 28013 Madrid / Via Roma 10, 00184 Roma / Piazza Navona 3
    re.compile(
        r"\b(?:Calle|C/|Avenida|Avda\.|Plaza|Paseo|Camino|Via|Viale|Piazza|Corso|Largo|Vicolo)"
        r"(?:\s+(?:de|del|de la|dei|della|di)?\s*[A-ZÀ-Ý][A-Za-zÀ-ÿ'-]+){1,3},?\s+\d{1,4}[a-zA-Z]?"
        rf"(?:,\s*\d{{5}}\s+{_CAP}(?:\s{_CAP})?)?"
    ),
]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _normalise(kind: str, text: str) -> str:
    if kind == "EMAIL":
        return text.strip().lower()
    if kind in ("CARD", "PHONE", "ACCOUNT"):
        return _digits(text)
    if kind == "IBAN":
        return re.sub(r"\s+", "", text).upper()
    return re.sub(r"[\s,.]+", " ", text).strip().lower()


def _candidates(text: str) -> Iterable[tuple[str, int, int]]:
    for m in _EMAIL.finditer(text):
        yield "EMAIL", m.start(), m.end()
    for m in _CARD.finditer(text):
        digits = _digits(m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield "CARD", m.start(), m.end()
    for m in _IBAN.finditer(text):
        if iban_valid(m.group()):
            yield "IBAN", m.start(), m.end()
    for m in _ACCOUNT.finditer(text):
        yield "ACCOUNT", m.start("num"), m.end("num")
    for m in _PHONE.finditer(text):
        raw = m.group()
        digits = _digits(raw)
        explicit = raw.startswith(("+", "("))
        if not 7 <= len(digits) <= 15:
            continue
        if not explicit and len(digits) < 9:
            continue
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{2}[./-]\d{2}[./-]\d{4}", raw):
            continue  # a date
        yield "PHONE", m.start(), m.end()
    for pattern in _ADDRESS_PATTERNS:
        for m in pattern.finditer(text):
            end = m.end()
            while end > m.start() and text[end - 1] in " ,":
                end -= 1
            yield "ADDRESS", m.start(), end


def find_pii(text: str, *, types: Sequence[str] | None = None) -> list[PiiSpan]:
    """Personal data in ``text``: non-overlapping spans sorted by offset.

    Overlaps are resolved by type priority (``PII_TYPES`` order), then by length.
    ``types`` restricts the result to some types (e.g. ``["EMAIL", "PHONE"]``).
    """
    priority = {t: i for i, t in enumerate(PII_TYPES)}
    wanted = set(types) if types is not None else set(PII_TYPES)
    unknown = wanted - set(PII_TYPES)
    if unknown:
        from loragraph.errors import ConfigError

        raise ConfigError(f"`types` must be among {list(PII_TYPES)}, got {sorted(unknown)}")
    found = sorted(
        ((kind, s, e) for kind, s, e in _candidates(text) if kind in wanted and e > s),
        key=lambda c: (priority[c[0]], -(c[2] - c[1]), c[1]),
    )
    taken: list[tuple[int, int]] = []
    spans: list[PiiSpan] = []
    for kind, start, end in found:
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        spans.append(PiiSpan(type=kind, text=text[start:end], start=start, end=end))  # type: ignore[arg-type]
    return sorted(spans, key=lambda s: s.start)


def redact(text: str, *, spans: Sequence[PiiSpan] | None = None, types: Sequence[str] | None = None) -> Redaction:
    """Replace personal data by ``[TYPE]`` placeholders.

    ``spans`` (offsets into ``text``) redacts exactly those; otherwise ``find_pii(text,
    types=types)`` decides.
    """
    chosen = sorted(spans if spans is not None else find_pii(text, types=types), key=lambda s: s.start)
    out: list[str] = []
    cursor = 0
    kept: list[PiiSpan] = []
    for span in chosen:
        if span.start < cursor or span.end > len(text) or text[span.start : span.end] != span.text:
            continue  # overlapping or stale span: skip rather than corrupt the text
        out.append(text[cursor : span.start])
        out.append(f"[{span.type}]")
        cursor = span.end
        kept.append(span)
    out.append(text[cursor:])
    return Redaction(text="".join(out), spans=kept)


def _occurs_in(span: PiiSpan, source_keys: dict[str, set[str]], source_digits: str, source_lower: str) -> bool:
    key = span.key
    if not key:
        return True
    if key in source_keys.get(span.type, set()):
        return True
    if span.type == "PHONE":
        # "+1 415 555 0134" in the reply vs "415-555-0134" in the message: compare the
        # national part (last 9 digits) against every phone of the source.
        tail = key[-9:]
        return any(k.endswith(tail) or key.endswith(k[-9:]) for k in source_keys.get("PHONE", set()) if len(k) >= 7)
    if span.type in ("CARD", "ACCOUNT"):
        return key in source_digits
    if span.type == "EMAIL":
        return key in source_lower
    if span.type == "ADDRESS":
        return _normalise("ADDRESS", span.text) in _normalise("ADDRESS", source_lower)
    return False


def pii_not_in(reply: str, source_text: str) -> list[PiiSpan]:
    """PII of ``reply`` that does not occur in ``source_text`` (offsets into ``reply``).

    A reply that repeats the customer's own email, phone or card back to them leaks
    nothing; a reply that contains someone else's does. Values are compared normalised
    (emails case-insensitive, phones/cards/accounts by digits, IBANs without spaces).
    """
    source_keys: dict[str, set[str]] = {}
    for span in find_pii(source_text):
        source_keys.setdefault(span.type, set()).add(span.key)
    source_digits = _digits(source_text)
    source_lower = source_text.lower()
    return [s for s in find_pii(reply) if not _occurs_in(s, source_keys, source_digits, source_lower)]
