"""The sample customer-service data set: reproducible, composed, exactly annotated.

``generate_sample(out_dir, seed=0, sizes=...)`` writes, for the 11 intents and 8 entity
types of the customer-service taxonomy::

    intent/{train,validation,test}.jsonl       classify  {"text", "label"}
    entities/{train,validation,test}.jsonl     tag       {"text", "entities": [{"type","start","end","text"}]}
    summary/{train,validation,test}.jsonl      generate  {"input": {"text"}, "target"}
    reply/{train,validation,test}.jsonl        generate  {"input": {"text","intent","entities","summary"}, "target"}
    reply_pairs/{train,validation,test}.jsonl  pairs     {"input": {...as reply...}, "chosen", "rejected"}
    documents.jsonl                            {"id", "text"}: documents to run a pipeline on
    manifest.json                              seed, sizes, counts per split, label and style

Messages are composed, not templated one-to-one: greeting, opener, the main ask (one of
dozens per intent), an optional second ask of another intent (the main ask first, or
marked "More importantly, ..."), details, contact lines, closing and signature, in chat,
email or web-form shape, with lowercase and typo styles. Names, emails and addresses come
from a seeded Faker; out-of-scope material also from presidio-evaluator's sentence
templates (read as a file when installed). Every entity is recorded while the text is
built, so offsets are exact by construction. Test messages use held-out ask templates
(about 20% per intent) and validation messages another 10%, so the test split measures
generalisation to new phrasings and validation (early stopping, the best epoch) sees it too; no
message text appears twice anywhere in the sample (splits, data sets, documents). Phones are
drawn in fictional ranges (555, Ofcom drama numbers) in US and UK formats. Same seed ->
byte-identical files (independent of PYTHONHASHSEED).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from loragraph.errors import ConfigError, RuntimeFailure
from loragraph.training import sample_text as T

__all__ = [
    "ENTITY_FORMATS",
    "ENTITY_TYPES",
    "INTENTS",
    "REJECTION_KINDS",
    "SIZE_PRESETS",
    "SPLITS",
    "Message",
    "SampleSizes",
    "SampleTemplates",
    "generate_messages",
    "generate_sample",
    "load_templates",
    "parse_sizes",
]

INTENTS: tuple[str, ...] = T.INTENTS
ENTITY_TYPES: tuple[str, ...] = ("ORDER_ID", "PERSON", "EMAIL", "PHONE", "DATE", "AMOUNT", "PRODUCT", "ADDRESS")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
Split = Literal["train", "validation", "test"]

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_FUTURE_DATES = ("tomorrow", "next week", "the weekend", "the end of the week", "the day after tomorrow", "next month", *tuple(f"next {d}" for d in _DAYS))
_RELATIVE_DATES = ("yesterday", "today", "this morning", "last week", "two days ago", "3 days ago", "a week ago", "the day before yesterday", "last month", "10 days ago", *tuple(f"last {d}" for d in _DAYS))

ENTITY_FORMATS: dict[str, str] = {
    "ORDER_ID": r"#[A-Z]-\d{5}|ORD-\d{4}-\d{5}|\d{4}-\d{3}",
    "PERSON": r"(?:(?:Mr|Ms|Mrs|Dr)\. )?[A-Z][A-Za-z'\-]+(?: [A-Z][A-Za-z'\-]+)*",
    "EMAIL": r"[a-z0-9._+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)+",
    "PHONE": r"\+?\(?[0-9][0-9 ().\-]{6,}[0-9]",
    "DATE": r"(?:" + "|".join(_MONTHS) + r") \d{1,2}(?:st|nd|rd|th)?|\d{1,2} (?:" + "|".join(_MONTHS)
    + r")|\d{4}-\d{2}-\d{2}|\d{2}/\d{2}/\d{4}|" + "|".join(_DAYS) + "|" + "|".join(_RELATIVE_DATES + _FUTURE_DATES),
    "AMOUNT": r"[$€£]\d{1,3}(?:,\d{3})*(?:\.\d{2})?|\d+(?:\.\d{2})? (?:USD|EUR|GBP|dollars|euros|pounds)|(?:USD|EUR|GBP) \d+(?:\.\d{2})?",
    "PRODUCT": "|".join(re.escape(p) for p in T.PRODUCTS),
    "ADDRESS": r".*\d.*,.*",
}
"""A full-match regex per entity type, describing the formats the generator writes."""


class SampleSizes(BaseModel):
    """Train-split sizes of each generated data set; validation and test are derived."""

    intent: int = Field(
        3000,
        ge=0,
        description="train examples of the intent (classify) data; the shipped intent config reads each once: 3000 "
        "distinct messages in one epoch read held-out phrasings better than 1500 in two, at the same cost",
    )
    entities: int = Field(1500, ge=0, description="train examples of the entities (tag) data")
    summary: int = Field(600, ge=0, description="train examples of the summary (generate) data")
    reply: int = Field(600, ge=0, description="train examples of the reply (generate) data")
    reply_pairs: int = Field(600, ge=0, description="train preference pairs for the reply stage")
    documents: int = Field(30, ge=0, description="sample documents in `documents.jsonl`")
    eval_fraction: float = Field(0.15, ge=0.0, lt=0.5, description="share of validation and of test each in the whole data set")

    def split_sizes(self, train: int) -> dict[str, int]:
        """Sizes of the three splits for a train size: validation and test are `eval_fraction` of the total each."""
        held = round(train * self.eval_fraction / (1 - 2 * self.eval_fraction)) if train else 0
        return {"train": train, "validation": held, "test": held}


SIZE_PRESETS: dict[str, SampleSizes] = {
    "default": SampleSizes(),
    "small": SampleSizes(intent=440, entities=440, summary=160, reply=160, reply_pairs=160, documents=30),
    "tiny": SampleSizes(intent=110, entities=88, summary=33, reply=33, reply_pairs=33, documents=12),
}


def parse_sizes(spec: str | None) -> SampleSizes:
    """``"default"`` / ``"small"`` / ``"tiny"``, optionally followed by ``key=value`` overrides:
    ``"small,intent=300,eval_fraction=0.2"`` or ``"intent=300"`` (on the default)."""
    if not spec:
        return SampleSizes()
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    base = SampleSizes()
    if parts and "=" not in parts[0]:
        if parts[0] not in SIZE_PRESETS:
            raise ConfigError(f"`--size` preset must be one of {', '.join(SIZE_PRESETS)}, got {parts[0]!r}")
        base = SIZE_PRESETS[parts.pop(0)]
    values = base.model_dump()
    for part in parts:
        key, _, raw = part.partition("=")
        if key not in values:
            raise ConfigError(f"`--size` key must be one of {', '.join(values)}, got {key!r}")
        try:
            values[key] = float(raw) if key == "eval_fraction" else int(raw)
        except ValueError:
            raise ConfigError(f"`--size` value of `{key}` must be a number, got {raw!r}") from None
    try:
        return SampleSizes(**values)
    except Exception as exc:
        raise ConfigError(f"`--size` is invalid: {exc}") from None


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class SampleTemplates:
    """The ask templates of every intent, in three disjoint pools: one per split.

    Validation and test messages are composed from phrasings that no training message uses,
    so validation metrics (early stopping, the best epoch, config choices) see the same
    generalisation gap that the test split measures."""

    train: dict[str, list[tuple[str, str | None]]]
    validation: dict[str, list[tuple[str, str | None]]]
    test: dict[str, list[tuple[str, str | None]]]

    def pool(self, split: str) -> dict[str, list[tuple[str, str | None]]]:
        """Ask templates usable in ``split``: each split has its own."""
        pools = {"train": self.train, "validation": self.validation, "test": self.test}
        if split not in pools:
            raise ValueError(f"unknown split `{split}`: expected one of {sorted(pools)}")
        return pools[split]

    def all(self, intent: str) -> list[tuple[str, str | None]]:
        """Every ask template of ``intent`` (the three pools together)."""
        return self.train[intent] + self.validation[intent] + self.test[intent]


_PRESIDIO_SLOTS = {
    "person": "person", "name": "person", "first_name": "first", "first_name_male": "first",
    "first_name_female": "first", "name_male": "first", "name_female": "first", "email": "email",
    "phone_number": "phone", "address": "address", "city": "city", "country": "country",
    "organization": "org", "nationality": "nationality", "job": "job", "day_of_week": "weekday",
    "year": "year", "age": "age", "street_name": "street", "url": "url",
}
_IN_SCOPE_WORDS = re.compile(
    r"card|account|order|statement|charge|bank|transfer|update|billing|cancel|block|limit|send|subscription|"
    r"money|funds|password|beneficiary|portfolio|messages|call me|reach you|address is|address:|please|iban|ssn|"
    r"killer|kill|died|devil|religion|necrophilia|patient|male|female|gender|rock|hungry|laid|injured|law|"
    r"security|license|birth|\{\{[a-z_]+\}\}:|speak|name is|name\?|email\?|\bmy name\b|manager|bot|boss|date|"
    r"address to|sent to|options|press|your email|under|answering|your address|"
    r"morning|night|week|day\b|year|month|today|yesterday|tomorrow|\{\{date|\{\{day_of_week",
    re.IGNORECASE,
)


@lru_cache(maxsize=1)
def _presidio_templates() -> tuple[tuple[str, str | None], ...]:
    """Out-of-scope sentences from presidio-evaluator's templates.txt (read as a file), slots mapped."""
    spec = importlib.util.find_spec("presidio_evaluator")
    if spec is None or not spec.submodule_search_locations:
        return ()
    path = Path(next(iter(spec.submodule_search_locations))) / "data_generator" / "raw_data" / "templates.txt"
    if not path.is_file():
        return ()
    out: list[tuple[str, str | None]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip().replace("\\n", "\n").replace("\\,", ",")
        if re.search(r"(?<!\{)\{\w+\}(?!\})", line):
            continue
        if not line or "\ufffd" in line or len(line) > 220 or "\n" in line or _IN_SCOPE_WORDS.search(line):
            continue
        slots = re.findall(r"\{\{(\w+)\}\}", line)
        if any(s not in _PRESIDIO_SLOTS for s in slots) or len(set(slots)) != len(slots):
            continue
        text = re.sub(r"\{\{(\w+)\}\}", lambda m: "{" + _PRESIDIO_SLOTS[m.group(1)] + "}", line)
        # people in out-of-scope chatter are not the customer (who may greet or sign)
        text = text.replace("{first}", "{first2}")
        if "I'm {person}" not in text:
            text = text.replace("{person}", "{person2}")
        if re.search(r"\{(?!\w+\})|(?<!\{\w)\}", re.sub(r"\{\w+\}", "", text)):
            continue
        out.append((text, "sends a message unrelated to customer service"))
    return tuple(out)


def load_templates(seed: int = 0, *, held_out: float = 0.2, validation: float = 0.1) -> SampleTemplates:
    """All ask templates: about ``held_out`` of each intent's kept for the test split and
    ``validation`` for the validation split (seeded per intent), the rest for training."""
    train: dict[str, list[tuple[str, str | None]]] = {}
    val: dict[str, list[tuple[str, str | None]]] = {}
    test: dict[str, list[tuple[str, str | None]]] = {}
    for intent in INTENTS:
        asks = [(a, None) if isinstance(a, str) else a for a in T.ASKS[intent]]
        if intent == "other":
            asks += list(_presidio_templates())
        rng = random.Random(f"{seed}:holdout:{intent}")
        order = list(range(len(asks)))
        rng.shuffle(order)
        n_test = max(2, round(len(asks) * held_out))
        n_val = max(2, round(len(asks) * validation))
        test[intent] = [asks[i] for i in sorted(order[:n_test])]
        val[intent] = [asks[i] for i in sorted(order[n_test : n_test + n_val])]
        train[intent] = [asks[i] for i in sorted(order[n_test + n_val :])]
    return SampleTemplates(train=train, validation=val, test=test)


# --------------------------------------------------------------------------- values


_DOMAINS = ("example.com", "gmail.com", "outlook.com", "yahoo.co.uk", "mail.com", "proton.me", "icloud.com")


class _Faker:
    """Pools of Faker values (US and GB names, addresses, places), drawn once from a seeded Faker.

    Messages pick from the pools with their own seeded ``random.Random``; drawing from Faker
    per message would dominate the run time."""

    def __init__(self, seed: int, size: int = 400) -> None:
        from faker import Faker

        us, gb = Faker("en_US"), Faker("en_GB")
        us.seed_instance(seed)
        gb.seed_instance(seed + 1)
        self.first = {"us": [_clean_name(us.first_name()) for _ in range(size)], "gb": [_clean_name(gb.first_name()) for _ in range(size)]}
        self.last = {"us": [_clean_name(us.last_name()) for _ in range(size)], "gb": [_clean_name(gb.last_name()) for _ in range(size)]}
        self.address = {
            "us": [f"{us.street_address()}, {us.city()}, {us.state_abbr()} {us.zipcode()}".replace("\n", ", ") for _ in range(size)],
            "gb": [_gb_address(gb.street_address(), gb.city(), gb.postcode(), i) for i in range(size)],
        }
        self.city = [us.city() for _ in range(size // 4)]
        self.country = [us.country() for _ in range(size // 4)]
        self.company = [us.company() for _ in range(size // 4)]
        self.job = [us.job() for _ in range(size // 4)]
        self.street = [us.street_name() for _ in range(size // 4)]


def _gb_address(street: str, city: str, postcode: str, i: int) -> str:
    street = street.replace("\n", ", ")
    if not re.search(r"\d", street):
        street = f"{i % 200 + 1} {street}"
    return f"{street}, {city} {postcode}"


@lru_cache(maxsize=4)
def _pools(seed: int) -> _Faker:
    return _Faker(seed)


def _clean_name(s: str) -> str:
    return re.sub(r"[^A-Za-z'\-]", "", s) or "Sam"


def _phone(rng: random.Random) -> str:
    n3, n4 = rng.randint(0, 999), rng.randint(0, 9999)
    area = rng.choice((212, 305, 312, 415, 503, 617, 646, 702, 718, 917))
    return rng.choice(
        (
            f"+1 {area} 555 {n4:04d}",
            f"({area}) 555-{n4:04d}",
            f"{area}-555-{n4:04d}",
            f"{area}.555.{n4:04d}",
            f"(020) 7946 0{n3:03d}",
            f"+44 20 7946 0{n3:03d}",
            f"07700 900{n3:03d}",
            f"+44 7700 900{n3:03d}",
        )
    )


def _end_sentence(b: _Builder) -> None:
    """A full stop after the text so far unless it already ends a sentence (before a next one)."""
    if not b.result().rstrip().endswith((".", "?", "!", ":")):
        b.text(".")


def _date(rng: random.Random, *, future: bool = False) -> tuple[str, bool]:
    """(date text, needs "on" before it in running text); ``future``: a relative date is ahead
    ("next week"), for "need it by {date2}" asks."""
    m, d = rng.randint(1, 12), rng.randint(1, 28)
    suffix = "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    kind = rng.randrange(8)
    if kind == 0:
        return f"{_MONTHS[m - 1]} {d}{suffix}", True
    if kind == 1:
        return f"{d} {_MONTHS[m - 1]}", True
    if kind == 2:
        return f"2026-{m:02d}-{d:02d}", True
    if kind == 3:
        return f"{m:02d}/{d:02d}/2026", True
    if kind == 4:
        return rng.choice(_DAYS), True
    return rng.choice(_FUTURE_DATES if future else _RELATIVE_DATES), False


def _amounts(rng: random.Random) -> tuple[str, str]:
    """Two different amounts in one currency, the first the larger ("charged {amount} instead of {amount2}")."""
    cur = rng.randrange(7)

    def value() -> float:
        return rng.choice((rng.randint(5, 300) + rng.choice((0, 0.99, 0.5, 0.49)), float(rng.randint(300, 1500))))

    def fmt(v: float) -> str:
        cents, whole = f"{v:,.2f}", f"{round(v):,}"
        return (f"${cents}", f"€{whole}", f"£{cents}", f"{round(v)} pounds", f"{v:.2f} USD", f"EUR {round(v)}", f"{round(v)} euros")[cur]

    a, b = value(), value()
    while fmt(a) == fmt(b):
        b = value()
    return (fmt(a), fmt(b)) if a > b else (fmt(b), fmt(a))


def _order_ids(rng: random.Random) -> tuple[str, str]:
    fmt = rng.randrange(3)

    def one() -> str:
        if fmt == 0:
            return f"#{rng.choice('ABCDEFGHKLMNPRSTWXZ')}-{rng.randint(10000, 99999)}"
        if fmt == 1:
            return f"ORD-{rng.choice((2024, 2025, 2026))}-{rng.randint(10000, 99999)}"
        return f"{rng.randint(1000, 9999)}-{rng.randint(100, 999)}"

    a = one()
    b = one()
    while b == a:
        b = one()
    return a, b


def _address(rng: random.Random, fk: _Faker) -> str:
    return rng.choice(fk.address["us" if rng.random() < 0.5 else "gb"])


_KIND_OF = {p: kind for kind, group in T.PRODUCTS_BY_KIND.items() for p in group}


def _fits(kinds: str, product: str) -> bool:
    return kinds == "*" or _KIND_OF[product] in kinds.split()


def _values(rng: random.Random, fk: _Faker, intent: str = "order_status") -> dict[str, Any]:
    loc = "us" if rng.random() < 0.6 else "gb"
    first, last = rng.choice(fk.first[loc]), rng.choice(fk.last[loc])
    person2 = f"{rng.choice(fk.first[loc])} {last if rng.random() < 0.5 else rng.choice(fk.last[loc])}"
    title = rng.choice(("Mr.", "Ms.", "Mrs.", "Dr."))
    ef, el = re.sub(r"[^A-Za-z]", "", first) or "sam", re.sub(r"[^A-Za-z]", "", last) or "lee"
    user = rng.choice((f"{ef}.{el}", f"{ef}{el[0]}", f"{ef[0]}{el}", f"{ef}_{el}{rng.randint(1, 99)}", f"{ef}{rng.randint(70, 99)}"))
    order_id, order_id2 = _order_ids(rng)
    amount, amount2 = _amounts(rng)
    product = rng.choice(T.PRODUCTS_BY_KIND["electronics"] if intent == "technical_support" else T.PRODUCTS)
    product2 = rng.choice([p for p in T.PRODUCTS if p != product])
    date, date_on = _date(rng)
    date2, date2_on = _date(rng, future=True)
    agent = rng.choice(fk.first["us"])
    pq = rng.choice([q for q in T.PRODUCT_QUESTIONS if _fits(q[3], product)])
    issue = rng.choice(T.PRODUCT_ISSUES)
    app_issue = rng.choice(T.APP_ISSUES)
    reason = rng.choice([r for r in T.RETURN_REASONS if _fits(r[2], product)])
    code = str(rng.randint(100, 999))
    app = rng.choice(T.APPS)
    values = {
        "person": f"{first} {last}", "first": first, "person2": person2, "first2": rng.choice(fk.first[loc]), "mr": f"{title} {last}", "agent": agent,
        "email": f"{user.lower()}@{rng.choice(_DOMAINS)}", "phone": _phone(rng),
        "address": _address(rng, fk), "address2": _address(rng, fk),
        "order_id": order_id, "order_id2": order_id2, "amount": amount, "amount2": amount2,
        "product": product, "product2": product2, "date": date, "date2": date2,
        "_on": {"date": date_on, "date2": date2_on},
        "pq": pq[0], "pq_cap": pq[0][0].upper() + pq[0][1:], "pq_sum": pq[1], "pq_answer": pq[2],
        "issue": issue[0].replace("{code}", code), "issue_sum": issue[1].replace("{code}", code),
        "app_issue": app_issue[0].replace("{code}", code).replace("{app}", app),
        "app_issue_sum": app_issue[1].replace("{code}", code).replace("{app}", app),
        "app_issue_cap": "", "app": app, "code": code,
        "reason": reason[0], "reason_cap": reason[0][0].upper() + reason[0][1:], "reason_sum": reason[1],
    }
    values["app_issue_cap"] = values["app_issue"][:1].upper() + values["app_issue"][1:]
    if intent == "other":  # fillers of out-of-scope messages only (Faker calls are the slow part)
        values |= {
            "city": rng.choice(fk.city), "country": rng.choice(fk.country), "domain": f"{last.lower()}-deals.biz",
            "org": rng.choice(fk.company), "nationality": rng.choice(("Italian", "Mexican", "Thai", "Greek", "Korean")),
            "job": rng.choice(fk.job), "weekday": rng.choice(_DAYS), "year": str(rng.randint(1960, 2024)),
            "age": str(rng.randint(18, 90)), "street": rng.choice(fk.street), "url": f"https://{last.lower()}.example.org/p/{code}",
        }
    return values


# --------------------------------------------------------------------------- building text

_SLOT = re.compile(r"\{(\w+)\}")
_NO_ON_BEFORE = re.compile(r"(?:\b(?:on|since|until|by|from|before|after|at)|[(:\-\n]|^)\s*$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z']+")
# after a plural product name ("my winter boots"): the verb that follows agrees with it
_PLURAL_VERBS = {
    "is": "are", "was": "were", "has": "have", "does": "do", "isn't": "aren't", "wasn't": "weren't",
    "hasn't": "haven't", "doesn't": "don't", "keeps": "keep", "makes": "make", "shows": "show",
    "overheats": "overheat", "drains": "drain", "arrives": "arrive", "fits": "fit", "comes": "come",
    "works": "work", "needs": "need", "seems": "seem", "looks": "look", "goes": "go", "stops": "stop",
    "fails": "fail", "turns": "turn", "smells": "smell", "feels": "feel", "costs": "cost",
}
_AFTER_PREPOSITION = re.compile(r"\b(?:for|of|about|with|on|from|to|in|into|at|by|than|like)\s+(?:the|my|your|their|our|his|her|these|those)?\s*$", re.IGNORECASE)
_PLURAL_VERB = re.compile(r"^(\s*(?:still |also |just |now |really |only )?)(" + "|".join(map(re.escape, _PLURAL_VERBS)) + r")\b")


@dataclass
class _Builder:
    """Appends literal text and entity slots, recording exact spans and the slots used."""

    values: dict[str, Any]
    rng: random.Random | None = None
    lowercase: bool = False
    typo_rate: float = 0.0
    parts: list[str] = field(default_factory=list)
    length: int = 0
    entities: list[dict[str, Any]] = field(default_factory=list)
    used: dict[str, str] = field(default_factory=dict)
    secondary_used: dict[str, str] = field(default_factory=dict)
    typos: int = 0
    plural_subject: bool = False  # the last text was a plural product name: the next verb agrees

    def _style(self, s: str) -> str:
        if self.lowercase:
            s = s.lower()
        if self.typo_rate and self.rng is not None:
            s = _WORD.sub(self._typo, s)
        return s

    def _typo(self, m: re.Match[str]) -> str:
        assert self.rng is not None
        w = m.group(0)
        low = w.lower()
        if low in T.TYPO_WORDS and self.rng.random() < self.typo_rate * 3:
            self.typos += 1
            rep = T.TYPO_WORDS[low]
            return rep.capitalize() if w[0].isupper() else rep
        if len(w) >= 5 and "'" not in w and self.rng.random() < self.typo_rate:
            self.typos += 1
            i = self.rng.randrange(1, len(w) - 2)
            op = self.rng.randrange(3)
            if op == 0:
                return w[:i] + w[i + 1] + w[i] + w[i + 2 :]
            if op == 1:
                return w[:i] + w[i + 1 :]
            return w[:i] + w[i] + w[i:]
        return w

    def text(self, s: str, *, style: bool = True) -> None:
        if not s:
            return
        if self.plural_subject and s.strip():
            s = _PLURAL_VERB.sub(lambda m: m.group(1) + _PLURAL_VERBS[m.group(2)], s, count=1)
            self.plural_subject = False
        s = self._style(s) if style else s
        self.parts.append(s)
        self.length += len(s)

    def entity(self, slot: str, etype: str, used: dict[str, str]) -> None:
        value = str(self.values[slot])
        before = "".join(self.parts[-2:])  # the text the value follows
        if slot in ("date", "date2") and self.values["_on"][slot] and not _NO_ON_BEFORE.search(before):
            self.text("on ")
        self.entities.append({"type": etype, "text": value, "start": self.length, "end": self.length + len(value)})
        used.setdefault(slot, value)
        self.parts.append(value)
        self.length += len(value)
        # a subject, not the object of a preposition ("the refund for the earbuds is approved")
        self.plural_subject = slot in ("product", "product2") and value in T.PLURAL_PRODUCTS and not _AFTER_PREPOSITION.search(before)

    def template(self, tmpl: str, *, secondary: bool = False) -> None:
        """Render ``tmpl``; slots of a secondary ask are recorded in ``secondary_used``, not ``used``."""
        used = self.secondary_used if secondary else self.used
        pos = 0
        for m in _SLOT.finditer(tmpl):
            self.text(tmpl[pos : m.start()])
            slot = m.group(1)
            if slot in T.ENTITY_SLOTS:
                self.entity(slot, T.ENTITY_SLOTS[slot], used)
            elif slot in self.values:
                used.setdefault(slot, str(self.values[slot]))
                self.text(str(self.values[slot]), style=slot in ("pq", "pq_cap", "reason", "reason_cap", "issue", "app_issue", "app_issue_cap"))
            else:
                raise RuntimeFailure(f"sample template slot `{slot}` has no value in template {tmpl!r}")
            pos = m.end()
        self.text(tmpl[pos:])

    def result(self) -> str:
        return "".join(self.parts)


def _render(tmpl: str, values: dict[str, Any]) -> str:
    b = _Builder(values)
    b.template(tmpl)
    return b.result()


# --------------------------------------------------------------------------- messages


@dataclass
class Message:
    """One generated customer message with its gold annotations.

    ``text``: the message; ``intent``: its label (the main ask); ``entities``: exact spans
    ``{type, text, start, end}``; ``secondary``: the intent of a second, minor ask or None;
    ``styles``: ``chat`` | ``email`` | ``form`` plus ``long``, ``lowercase``, ``typos``,
    ``multi_ask``, ``main_marked``; ``template``: ``intent:ask template`` (held-out check);
    ``values``: every value drawn for the message; ``used``: slot -> value said in the message
    outside the secondary ask; ``gist`` / ``secondary_gist`` / ``secondary_reply``: the
    summary predicates and the reply sentence of the asks, when the template gives them.
    """

    text: str
    intent: str
    entities: list[dict[str, Any]]
    secondary: str | None
    styles: tuple[str, ...]
    template: str
    values: dict[str, Any]
    used: dict[str, str]
    gist: str | None
    secondary_gist: str | None
    secondary_reply: str | None

    @property
    def summary(self) -> str:
        """A short neutral third-person summary naming the main ask and its key details."""
        return _summary(self)

    @property
    def reply(self) -> str:
        """A polite agent reply that answers the main ask with the customer's own details."""
        return _reply(self, self.intent)


_CONCRETE = tuple(i for i in INTENTS if i not in ("complaint", "other"))
_GREETING_START = re.compile(r"(?:hi|hello|hey|hiya|dear|good (?:morning|afternoon|evening|day)|greetings)\b", re.IGNORECASE)


def _standalone(tmpl: str) -> str:
    """A secondary ask said first: drop its leading "Also"/"And"."""
    out = re.sub(r"^(?:Also,? |And )", "", tmpl).replace("I also ", "I ", 1).replace(" either", "")
    return out[:1].upper() + out[1:]


def _lower_first(tmpl: str) -> str:
    if tmpl.startswith(("I ", "I'", "{")) or len(tmpl) < 2:
        return tmpl
    return tmpl[0].lower() + tmpl[1:]


def _compose(
    rng: random.Random,
    fk: _Faker,
    intent: str,
    pool: dict[str, list[tuple[str, str | None]]],
    *,
    entity_rich: bool = False,
    mode: str | None = None,
    multi_rate: float = 0.25,
    long: bool | None = None,
) -> Message:
    values = _values(rng, fk, intent)
    idx = rng.randrange(len(pool[intent]))
    ask, gist = pool[intent][idx]
    secondary = sec_t = sec_gist = sec_reply = None
    if intent in _CONCRETE and rng.random() < multi_rate:
        secondary = rng.choice([i for i in _CONCRETE if i != intent])
        sec_t, sec_gist, sec_reply = rng.choice(T.SECONDARY[secondary])
    if mode is None:
        mode = "chat" if intent == "other" and rng.random() < 0.85 else rng.choices(("chat", "email", "form"), weights=(5, 4, 1))[0]
    if mode == "form" and intent == "other":
        mode = "email"
    greets = _GREETING_START.match(ask) is not None  # the ask opens with its own "Hi", "Hello", ...: no greeting, opener or backstory before it
    if long is None:
        long = mode == "email" and intent != "other" and rng.random() < 0.15 and not greets
    styles: list[str] = [mode] + (["long"] if long and mode == "email" else [])
    lowercase = mode == "chat" and rng.random() < 0.25
    typo = rng.random() < (0.3 if mode == "chat" else 0.12) and "unrelated to customer" not in (gist or "")
    if lowercase:
        styles.append("lowercase")
    if typo:
        styles.append("typos")
    if secondary:
        styles.append("multi_ask")
    b = _Builder(values, rng, lowercase=lowercase, typo_rate=0.06 if typo else 0.0)
    detail_p = 0.6 if entity_rich else 0.2
    contact_p = 0.6 if entity_rich else 0.25

    def asks(sep: str) -> None:
        if secondary and sec_t and rng.random() < 0.3:
            marker = rng.choice(T.SECONDARY_MARKERS)
            first = _standalone(sec_t)
            b.template(marker + (_lower_first(first) if marker and not marker.endswith(": ") else first), secondary=True)
            b.text(sep)
            main_marker = rng.choice(T.MAIN_MARKERS)  # no typos in it: it is what marks the main ask
            b.text(main_marker.lower() if b.lowercase else main_marker, style=False)
            b.template(_lower_first(ask))
            styles.append("main_marked")
        else:
            b.template(ask)
            if secondary and sec_t:
                _end_sentence(b)
                b.text(sep)
                b.template(sec_t, secondary=True)

    def extras(sep: str, n_max: int) -> None:
        if intent == "other":
            return
        if rng.random() < detail_p:
            for _ in range(rng.randint(1, n_max)):
                # only details that add something: no slot already said
                lines = [
                    d for d in T.DETAIL_LINES
                    if not _SLOT.findall(d) or not set(_SLOT.findall(d)) & (b.used.keys() | b.secondary_used.keys())
                    # no vague "it" after two asks, nor after a login problem (it has no item)
                    if not ((secondary or intent == "account_access") and re.search(r"\b[Ii]t\b", d))
                    if not (intent == "change_shipping_address" and "{address}" in d)
                ]
                if not lines:
                    break
                _end_sentence(b)
                b.text(sep)
                b.template(rng.choice(lines))
        if rng.random() < contact_p:
            lines = [c for c in T.CONTACT_LINES if not set(_SLOT.findall(c)) & b.used.keys()]
            if lines:
                _end_sentence(b)
                b.text(sep)
                b.template(rng.choice(lines))

    if mode == "chat":
        if rng.random() < 0.4 and not greets:
            b.template(rng.choice(T.GREETINGS))
            b.text(" ")
        asks(" ")
        extras(" ", 2)
        if intent != "other" and rng.random() < 0.3:
            b.text(" ")
            b.template(rng.choice(T.CLOSINGS))
    elif mode == "email":
        if not greets:
            b.template(rng.choice(T.GREETINGS))
            b.text("\n\n")
        if (rng.random() < 0.6 or long) and not greets:
            b.template(rng.choice(T.NEUTRAL_OPENERS if intent == "other" else T.OPENERS))
            b.text(" ")
        if long:
            for line in rng.sample(T.BACKSTORY, rng.randint(2, 3)):
                b.template(line)
                b.text(" ")
            b.parts[-1] = b.parts[-1].rstrip(" ") + "\n\n"
            b.length = len(b.result())
        asks(" " if rng.random() < 0.6 else "\n\n")
        extras(" ", 3)
        if intent in _CONCRETE and rng.random() < 0.25:
            b.text(" ")
            b.template(rng.choice(T.COMPLAINT_REMARKS))
        b.text("\n\n")
        b.template(rng.choice(T.CLOSINGS))
        b.text("\n\n")
        # an address in the signature would read as the new delivery address of an ask that gives none
        b.template(rng.choice([s for s in T.SIGNATURES if not (intent == "change_shipping_address" and "{address}" in s)]))
    else:  # form
        b.template("Name: {person}\nEmail: {email}\n")
        if rng.random() < 0.6:
            b.template("Order number: {order_id}\n")
        if rng.random() < 0.4:
            b.template("Phone: {phone}\n")
        b.text("Message: ")
        asks(" ")
        extras(" ", 1)
    text = b.result()
    if typo and b.typos == 0:  # the typo style must show: misspell the first long literal word
        return _compose(rng, fk, intent, pool, entity_rich=entity_rich, mode=mode, multi_rate=multi_rate, long=long)
    return Message(
        text=text,
        intent=intent,
        entities=b.entities,
        secondary=secondary,
        styles=tuple(dict.fromkeys(styles)),
        template=f"{intent}:{ask}",
        values=values,
        used=b.used,
        gist=gist,
        secondary_gist=sec_gist,
        secondary_reply=sec_reply,
    )


def generate_messages(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    stream: str = "intent",
    templates: SampleTemplates | None = None,
    entity_rich: bool = False,
    seen: set[str] | None = None,
) -> list[Message]:
    """``n`` distinct messages, intents balanced (round robin in a seeded order), from the ask
    templates allowed in ``split``. ``seen`` (texts already used, e.g. by other splits) is updated."""
    templates = templates or load_templates(seed)
    pool = templates.pool(split)
    rng = random.Random(f"{seed}:{stream}:{split}")
    fk = _pools(seed)
    seen = set() if seen is None else seen
    order = list(INTENTS)
    out: list[Message] = []
    while len(out) < n:
        if len(out) % len(order) == 0:
            rng.shuffle(order)
        intent = order[len(out) % len(order)]
        for _ in range(200):
            msg = _compose(rng, fk, intent, pool, entity_rich=entity_rich)
            key = msg.text.strip()
            if key not in seen:
                break
        else:
            raise RuntimeFailure(f"could not compose a new distinct `{intent}` message for `{stream}/{split}` after 200 tries")
        seen.add(key)
        out.append(msg)
    return out


# --------------------------------------------------------------------------- summaries and replies


def _subject(msg: Message) -> str:
    for slot in ("person", "mr"):
        if slot in msg.used:
            return msg.used[slot]
    if "first" in msg.used:
        return msg.used["first"]
    return "The customer"


def _order_ref(used: dict[str, str], *, product: bool = True) -> str:
    if "order_id" in used:
        return "order {order_id}" + (" ({product})" if product and "product" in used else "")
    if "product" in used:
        return "the {product} order"
    return "their order"


def _default_gist(msg: Message) -> str:
    u = msg.used
    o = _order_ref(u)
    if msg.intent == "order_status":
        return f"asks for the delivery status of {o}" + (", ordered {date}" if "date" in u else "") + (", needed by {date2}" if "date2" in u else "")
    if msg.intent == "cancel_order":
        return f"asks to cancel {o}" + (", charged {amount}" if "amount" in u else "")
    if msg.intent == "refund_request":
        amt = " of the remaining money ({amount2} of {amount} refunded)" if "amount2" in u else (" of {amount}" if "amount" in u else "")
        # the date is a return date only where the ask says so (a detail line's date is the order's)
        return f"asks for a refund{amt} for {o}" + (", returned {date}" if "{date}" in msg.template else "")
    if msg.intent == "return_item":
        verb = "wants to exchange" if re.search(r"exchange|swap|different size|replacement", msg.template) else "wants to return"
        thing = "the {product}" + (" from order {order_id}" if "order_id" in u else "") if "product" in u else ("order {order_id}" if "order_id" in u else "an item")
        return f"{verb} {thing}" + (" because {reason_sum}" if "reason" in u or "reason_cap" in u else "")
    if msg.intent == "change_shipping_address":
        return f"asks to change the delivery address of {o}" + (" to {address}" if "address" in u else "") + (" (instead of {address2})" if "address2" in u else "")
    if msg.intent == "product_question":
        return "asks about the {product}: {pq_sum}" if "product" in u else "asks {pq_sum}"
    if msg.intent == "technical_support":
        if "issue" in u:
            return "reports that their {product} {issue_sum} and asks for help"
        return "reports that {app_issue_sum} and asks for help"
    return "sends a message"


def _summary(msg: Message) -> str:
    subject = _subject(msg)
    gist = _render(msg.gist or _default_gist(msg), msg.values)
    order_id = msg.used.get("order_id")
    if order_id and order_id not in gist and msg.intent != "other":  # said in a detail line, not in the ask
        gist += f" (order {order_id})"
    text = f"{subject} {gist}."
    if msg.intent == "other":
        text = text[:-1] + "; there is no customer-service request."
    if msg.secondary_gist:
        short = msg.values["first"] if ("person" in msg.used or "first" in msg.used) else subject
        text += f" {short} {_render(msg.secondary_gist, msg.values)}."
    return text


def _greeting(msg: Message) -> str:
    u = msg.used
    if "first" in u or "person" in u:
        return "Hi {first},"
    if "mr" in u:
        return "Dear {mr},"
    return "Hello,"


def _body(msg: Message, intent: str, v: int) -> str:
    u = msg.used
    o = "order {order_id}" if "order_id" in u else ("your {product} order" if "product" in u else "your order")
    amt = " of {amount}" if "amount" in u else ""
    g = msg.gist or ""
    if intent == "order_status":
        return (
            f"I've checked {o}: it has left our warehouse and is with the courier now. It should reach you within 2-3 business days, and the tracking link is in your shipping confirmation email.",
            f"Sorry for the wait on {o}. The parcel is in transit and the latest tracking scan shows it on schedule, so you should have it within 3 business days. If it hasn't arrived by then, reply here and we'll open an investigation with the courier.",
        )[v % 2]
    if intent == "cancel_order":
        refund = "The charge{amt} will go back to your original payment method within 3-5 business days." if amt else "Any payment taken will go back to your original payment method within 3-5 business days."
        return (
            f"I've cancelled {o} as requested, so nothing will be shipped. {refund.replace('{amt}', amt)}",
            f"Done: {o} is cancelled before dispatch. {refund.replace('{amt}', amt)} You'll also get a confirmation email.",
        )[v % 2]
    if intent == "refund_request":
        thing = o if "order_id" in u else ("the {product}" if "product" in u else "your purchase")
        if "amount2" in u:
            return "You're right: of the {amount} you paid, only {amount2} was refunded. I've sent the difference to your original payment method; it usually shows up within 5-7 business days."
        amount = amt
        return (
            f"I've issued a refund{amount} for {thing}. It goes back to your original payment method and usually shows up within 5-7 business days.",
            f"Thanks for your patience. The refund{amount} for {thing} is approved and on its way to your original payment method; please allow 5-7 business days for your bank to show it.",
        )[v % 2]
    if intent == "return_item":
        thing = "the {product}" if "product" in u else ("the item from order {order_id}" if "order_id" in u else "the item")
        to = " to {email}" if "email" in u else ""
        exchange = bool(re.search(r"exchange|swap|different size|replacement", msg.template))
        after = "Once it reaches us we'll send you the replacement." if exchange else "Once it reaches us we'll process your refund."
        verb = "exchange" if exchange else "return"
        article = "an" if exchange else "a"
        return (
            f"Of course, you can {verb} {thing}. I've emailed a prepaid return label{to}: pack the item, attach the label and drop it at any post office within 30 days. {after}",
            f"No problem, I've opened {article} {verb} for {thing} and sent the prepaid label{to}. Please drop the parcel at any post office within 30 days. {after}",
        )[v % 2]
    if intent == "change_shipping_address":
        if "address" in u:
            return (
                f"I've updated the delivery address for {o} to {{address}}. The courier has the new address, so your parcel will go there.",
                f"Done: {o} will now be delivered to {{address}}. You'll get an updated shipping confirmation by email.",
            )[v % 2]
        return f"Please reply with the full new address and I'll update {o} right away."
    if intent == "billing_issue":
        if "invoice" in g or "invoice" in msg.template.lower():
            return f"I've sent the invoice for {o if 'order_id' in u else 'your purchase'} to {'{email}' if 'email' in u else 'the email address on your account'}."
        if "declined" in g or "fail" in g:
            return "I've checked your payment: no charge went through, and any pending authorisation will be released by your bank within a few days. Please try again, or use another card or PayPal."
        if "amount2" in u:
            return "You're right, you should have paid {amount2}, not {amount}. I've refunded the difference to your original payment method; it will show within 3-5 business days."
        if "twice" in g or "double" in g or "duplicate" in g or "two payments" in g:
            return f"I can see the duplicate charge{amt}{' on ' + o if 'order_id' in u else ''} and I've refunded the extra payment. It will show on your statement within 3-5 business days."
        return f"I've looked into the charge{amt}{' from {date}' if 'date' in u else ''} and corrected it; the money goes back to your original payment method within 3-5 business days."
    if intent == "account_access":
        to = "{email}" if "email" in u else "the email address on your account"
        if "two-factor" in g or "2FA" in msg.template or "verification code" in g:
            return f"I've reset two-factor authentication on your account{' (the number {phone} is removed)' if 'phone' in u else ''}. You can now log in with your password and set up a new device."
        if "locked" in g or "suspended" in g or "unlock" in g:
            return f"I've unlocked your account. For safety, I've also sent a password reset link to {to}; it is valid for one hour."
        if "verif" in g:
            return f"I've verified your account manually and resent the verification email to {to}; once you click the link you can log in as usual."
        if "sign-in link" in g:
            return f"I've sent a fresh sign-in link to {to}. Please open it in the same browser you use for our site; if it still leaves you signed out, clear the site's cookies and try once more."
        if "hacked" in g:
            return f"I've secured your account and signed out all sessions. Please use the password reset link I've sent to {to} to choose a new password."
        return (
            f"I've sent a new password reset link to {to}; it is valid for one hour. If it doesn't arrive within a few minutes, please check your spam folder.",
            f"Let's get you back in: a fresh password reset link is on its way to {to}. It works for one hour, and after that you can log in with your new password.",
        )[v % 2]
    if intent == "product_question":
        about = " about the {product}" if "product" in u else ""
        return (
            f"Good question{about}: {{pq_answer}}. Let me know if you'd like anything else about it.",
            f"Happy to help with your question{about}: {{pq_answer}}.",
        )[v % 2]
    if intent == "technical_support":
        if "issue" in u:
            return "Sorry your {product} {issue_sum}. Please unplug it for 30 seconds, hold the reset button for 10 seconds and set it up again. If that doesn't fix it, reply with " + ("order {order_id}" if "order_id" in u else "your order number") + " and we'll arrange a repair or replacement under warranty."
        if not {"app_issue", "app_issue_cap"} & u.keys():  # an ask that describes its own problem (its gist says which)
            return (
                "Sorry about the trouble, and thanks for describing it so clearly. Please update to the latest version, restart "
                + ("the {product}" if "product" in u else "the app or your browser")
                + " and try again. If it still happens, reply with a screenshot and our technical team will look into it."
            )
        return (
            "Sorry about the trouble: {app_issue_sum}. Please update to the latest version, clear your browser cache or the app's data and try again. Our technical team is looking into it, and I'll follow up if that doesn't solve it.",
            "Thanks for reporting this: {app_issue_sum}. A quick fix that usually works is to sign out, update to the latest version and sign in again. If it still happens, reply with a screenshot and we'll investigate.",
        )[v % 2]
    if intent == "complaint":
        about = "about {agent}" if "{agent}" in g else ""
        return (
            f"I'm truly sorry about your experience{' with ' + o if 'order_id' in u else ''}. That's not the standard we aim for, and I've passed your feedback{(' ' + about) if about else ''} to the team lead so it gets addressed. Thank you for telling us.",
            f"Thank you for your honest feedback, and I'm sorry we let you down. I've shared your feedback{(' ' + about) if about else ''} with the responsible team, and we'll use it to improve.",
        )[v % 2]
    return (
        "I'm the customer-service assistant for our shop: I can help with orders, deliveries, returns, refunds, billing and your account. Is there anything like that I can help you with today?",
        "That's outside what I can help with here, I'm afraid. I'm happy to help with your orders, returns, refunds, billing or account, though.",
        "I can only help with questions about our shop, such as orders, deliveries, returns, payments and your account. Feel free to ask about any of those!",
    )[v % 3]


def _reply(msg: Message, intent: str, *, variant: int | None = None) -> str:
    v = variant if variant is not None else len(msg.text)
    parts = [_greeting(msg), "", ("Thanks for reaching out. ", "Thank you for your message. ", "Thanks for getting in touch. ")[v % 3] + _body(msg, intent, v)]
    if msg.secondary_reply and intent == msg.intent:
        parts[-1] += " " + msg.secondary_reply
    parts += ["", ("Best regards,\nCustomer Support", "Kind regards,\nThe Support Team", "All the best,\nCustomer Care")[v % 3]]
    return _render("\n".join(parts), msg.values)


_RUDE = (
    "Read the FAQ before writing to us. We can't do anything about {ref}.",
    "Not our problem. Contact the courier yourself.",
    "We get hundreds of these messages. Your request will be handled when we get to it.",
    "Seriously? This is all explained on our website. Please don't waste our time.",
    "Calm down. Nothing is wrong with {ref}, you just need to wait like everyone else.",
)
_OVERPROMISE = (
    " As an apology, I've also upgraded you to free express shipping for a year and added a $100 credit to your account.",
    " I've also cancelled your other open orders so this can't happen again.",
    " We'll also send you a second {product} for free today, no need to return anything.",
    " I've also closed your account and deleted your order history to keep things simple.",
    " I've also subscribed you to our premium membership at no cost for the first month.",
)
REJECTION_KINDS: tuple[str, ...] = ("off_topic", "rude", "wrong_details", "overpromise", "leak")


def _rejected(msg: Message, chosen: str, kind: str, rng: random.Random, fk: _Faker) -> tuple[str, str]:
    """A worse reply of the given kind (falls back to another kind when it cannot apply)."""
    u = msg.used
    if kind == "wrong_details":
        if "order_id" in u and u["order_id"] in chosen:
            other, _ = _order_ids(rng)
            while other == u["order_id"]:
                other, _ = _order_ids(rng)
            return chosen.replace(u["order_id"], other), kind
        for slot in ("amount", "amount2", "address"):
            if slot in u and u[slot] in chosen:
                wrong = _amounts(rng)[0] if slot != "address" else _address(rng, fk)
                if wrong != u[slot]:
                    return chosen.replace(u[slot], wrong), kind
        kind = rng.choice(("off_topic", "rude", "overpromise", "leak"))
    if kind == "off_topic":
        wrong_intent = rng.choice([i for i in INTENTS if i not in (msg.intent, "other")])
        return _reply(msg, wrong_intent, variant=rng.randrange(6)), kind
    if kind == "rude":
        ref = _render(_order_ref(u, product=False).replace("their", "your"), msg.values)
        return rng.choice(_RUDE).replace("{ref}", ref), kind
    if kind == "overpromise":
        return chosen.rstrip().rsplit("\n\n", 1)[0] + _render(rng.choice(_OVERPROMISE), msg.values) + "\n\n" + chosen.rsplit("\n\n", 1)[-1], kind
    other = _values(rng, fk, msg.intent)
    leak = rng.choice(
        (
            f" For reference, {other['person']} ({other['email']}) had the same problem with order {other['order_id']} last week.",
            f" I've also copied {other['person']} at {other['address']} on this, since their order {other['order_id']} is in the same parcel.",
            f" By the way, the previous customer with this issue, {other['person']}, can be reached on {other['phone']} if you want to compare notes.",
        )
    )
    head, _, tail = chosen.rstrip().rpartition("\n\n")
    return head + leak + "\n\n" + tail, "leak"


# --------------------------------------------------------------------------- writing


def _dump(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _stage_input(msg: Message) -> dict[str, Any]:
    return {
        "text": msg.text,
        "intent": {"label": msg.intent},
        "entities": {"entities": [dict(e) for e in msg.entities]},
        "summary": {"text": msg.summary},
    }


def _style_counts(msgs: Sequence[Message]) -> dict[str, int]:
    c: Counter[str] = Counter(s for m in msgs for s in m.styles)
    return dict(sorted(c.items()))


_Row = Callable[[Message, random.Random, _Faker], dict[str, Any]]


def generator_digest() -> str:
    """sha256 of the generator's source (this module and ``sample_text``): a sample written by
    another version of it differs (the manifest's ``generator_digest``)."""
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(T.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def generate_sample(out_dir: str | Path, seed: int = 0, sizes: SampleSizes | None = None) -> dict[str, Any]:
    """Write the sample data set to ``out_dir`` (see the module doc) and return the manifest."""
    sizes = sizes or SampleSizes()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    templates = load_templates(seed)
    manifest: dict[str, Any] = {
        "generator": "loragraph.training.sample",
        "format_version": 1,
        "generator_digest": generator_digest(),
        "seed": seed,
        "sizes": sizes.model_dump(),
        "intents": list(INTENTS),
        "entity_types": list(ENTITY_TYPES),
        "held_out_templates": {i: len(templates.test[i]) for i in INTENTS},
        "validation_templates": {i: len(templates.validation[i]) for i in INTENTS},
        "train_templates": {i: len(templates.train[i]) for i in INTENTS},
        "presidio_templates": len(_presidio_templates()),
        "note": (
            "each split has its own ask templates (test: held_out_templates, validation: validation_templates); "
            "no message text appears twice in the whole sample (splits, data sets, documents); presidio_templates = out-of-scope sentences "
            "read from presidio-evaluator (0 when it is not installed, which changes the output)"
        ),
        "datasets": {},
    }
    rejected_counter: Counter[str] = Counter()
    seen: set[str] = set()  # every text is used once in the whole sample: no leakage between splits or data sets

    def classify_row(m: Message, rng: random.Random, fk: _Faker) -> dict[str, Any]:
        return {"text": m.text, "label": m.intent}

    def tag_row(m: Message, rng: random.Random, fk: _Faker) -> dict[str, Any]:
        return {"text": m.text, "entities": [{"type": e["type"], "start": e["start"], "end": e["end"], "text": e["text"]} for e in m.entities]}

    def summary_row(m: Message, rng: random.Random, fk: _Faker) -> dict[str, Any]:
        return {"input": {"text": m.text}, "target": m.summary}

    def reply_row(m: Message, rng: random.Random, fk: _Faker) -> dict[str, Any]:
        return {"input": _stage_input(m), "target": m.reply}

    def pair_row(m: Message, rng: random.Random, fk: _Faker) -> dict[str, Any]:
        chosen = m.reply
        kind = REJECTION_KINDS[(rng.randrange(len(REJECTION_KINDS)))]
        rejected, kind = _rejected(m, chosen, kind, rng, fk)
        rejected_counter[kind] += 1
        return {"input": _stage_input(m), "chosen": chosen, "rejected": rejected}

    jobs: list[tuple[str, int, str, bool, _Row]] = [
        ("intent", sizes.intent, "classify", False, classify_row),
        ("entities", sizes.entities, "tag", True, tag_row),
        ("summary", sizes.summary, "generate", False, summary_row),
        ("reply", sizes.reply, "generate", False, reply_row),
        ("reply_pairs", sizes.reply_pairs, "pairs", False, pair_row),
    ]
    for name, train_n, kind, rich, row in jobs:
        if train_n <= 0:
            continue
        info: dict[str, Any] = {"kind": kind, "splits": {}}
        for split, n in sizes.split_sizes(train_n).items():
            msgs = generate_messages(n, seed=seed, split=split, stream=name, templates=templates, entity_rich=rich, seen=seen)
            rng = random.Random(f"{seed}:{name}:{split}:rows")
            fk = _pools(seed)
            rows = [row(m, rng, fk) for m in msgs]
            _dump(out / name / f"{split}.jsonl", rows)
            entry: dict[str, Any] = {
                "count": len(rows),
                "sha256": hashlib.sha256((out / name / f"{split}.jsonl").read_bytes()).hexdigest(),
                "labels": dict(sorted(Counter(m.intent for m in msgs).items())),
                "styles": _style_counts(msgs),
            }
            if kind == "tag":
                entry["entity_types"] = dict(sorted(Counter(e["type"] for m in msgs for e in m.entities).items()))
            info["splits"][split] = entry
        manifest["datasets"][name] = info
    if rejected_counter:
        manifest["datasets"]["reply_pairs"]["rejected_kinds"] = dict(sorted(rejected_counter.items()))

    if sizes.documents > 0:
        docs = _documents(sizes.documents, seed, templates, seen)
        _dump(out / "documents.jsonl", [{"id": f"doc-{i + 1:03d}", "text": m.text} for i, m in enumerate(docs)])
        manifest["documents"] = {"count": len(docs), "labels": dict(sorted(Counter(m.intent for m in docs).items())), "styles": _style_counts(docs)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _documents(n: int, seed: int, templates: SampleTemplates, seen: set[str]) -> list[Message]:
    """Documents to run a pipeline on: long multi-ask emails, short chats, forms and out-of-scope messages."""
    rng = random.Random(f"{seed}:documents")
    fk = _pools(seed)
    pool = {i: templates.all(i) for i in INTENTS}
    out: list[Message] = []
    while len(out) < n:
        k = len(out)
        intent = INTENTS[k % len(INTENTS)]
        if k % 6 == 5:
            intent = "other"
        mode = ("email", "chat", "email", "chat", "form", "chat")[k % 6]
        multi = 1.0 if mode == "email" and k % 3 == 0 else 0.25
        msg = _compose(rng, fk, intent, pool, entity_rich=mode == "email", mode=mode, multi_rate=multi, long=mode == "email" and k % 2 == 0)
        if msg.text not in seen:
            seen.add(msg.text)
            out.append(msg)
    return out
