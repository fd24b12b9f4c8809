from __future__ import annotations

import pytest

from loragraph.errors import ConfigError
from loragraph.guardrails.redact import find_pii, iban_valid, luhn_valid, pii_not_in, redact


def _types(text: str) -> list[tuple[str, str]]:
    return [(s.type, s.text) for s in find_pii(text)]


def test_spans_are_exact_offsets_of_the_text() -> None:
    text = "Mail maria.lopez@example.com or call +1 415 555 0134 about card 4111 1111 1111 1111."
    spans = find_pii(text)
    assert [(s.type, s.text) for s in spans] == [
        ("EMAIL", "maria.lopez@example.com"),
        ("PHONE", "+1 415 555 0134"),
        ("CARD", "4111 1111 1111 1111"),
    ]
    for s in spans:
        assert text[s.start : s.end] == s.text


def test_redact_replaces_spans_with_placeholders() -> None:
    text = "I'm at 221B Baker Street, London NW1 6XE, phone (020) 7946 0958."
    out = redact(text)
    assert out.text == "I'm at [ADDRESS], phone [PHONE]."
    assert [s.type for s in out.spans] == ["ADDRESS", "PHONE"]
    assert out.changed


def test_card_needs_a_valid_luhn_checksum() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert _types("card 4111-1111-1111-1111") == [("CARD", "4111-1111-1111-1111")]
    assert _types("card 4111 1111 1111 1112") == []


def test_iban_and_account_numbers() -> None:
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert not iban_valid("DE88 3704 0044 0532 0130 00")
    assert _types("IBAN DE89 3704 0044 0532 0130 00 please") == [("IBAN", "DE89 3704 0044 0532 0130 00")]
    assert _types("my account number: 12345678") == [("ACCOUNT", "12345678")]
    assert _types("Konto 123456789") == [("ACCOUNT", "123456789")]


@pytest.mark.parametrize(
    "text",
    [
        "Where is my order #A-48213? It was due 2026-11-02.",
        "Please cancel ORD-2024-11873 and order 5512-993.",
        "I paid $49.99 on 12.03.2024, tracking 1Z999AA10123456784.",
    ],
)
def test_order_ids_dates_and_amounts_are_not_pii(text: str) -> None:
    assert find_pii(text) == []
    assert redact(text).text == text


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("Ship to Hauptstraße 12, 10115 Berlin bitte", "Hauptstraße 12, 10115 Berlin"),
        ("Livrez au 12 rue de la Paix, 75002 Paris svp", "12 rue de la Paix, 75002 Paris"),
        ("Enviar a Calle Mayor 5, 28013 Madrid.", "Calle Mayor 5, 28013 Madrid"),
        ("Spedite a Via Roma 10, 00184 Roma.", "Via Roma 10, 00184 Roma"),
    ],
)
def test_postal_addresses_in_several_languages(text: str, address: str) -> None:
    assert _types(text) == [("ADDRESS", address)]


def test_types_filter_and_unknown_type() -> None:
    text = "a@b.com +1 415 555 0134"
    assert [s.type for s in find_pii(text, types=["PHONE"])] == ["PHONE"]
    with pytest.raises(ConfigError, match="`types`"):
        find_pii(text, types=["SSN"])


def test_pii_not_in_ignores_the_customers_own_data() -> None:
    message = "I am MARIA.lopez@example.com, call me on 415-555-0134."
    reply = "We wrote to maria.lopez@example.com and will call +1 415 555 0134. John's card is 4111 1111 1111 1111."
    leaked = pii_not_in(reply, message)
    assert [(s.type, s.text) for s in leaked] == [("CARD", "4111 1111 1111 1111")]
    assert reply[leaked[0].start : leaked[0].end] == "4111 1111 1111 1111"
    assert pii_not_in("Call Tom at +44 20 7946 0000", message)[0].type == "PHONE"


def test_redact_skips_stale_spans() -> None:
    spans = find_pii("mail a@b.com now")
    assert redact("something else entirely", spans=spans).text == "something else entirely"
