"""The request type follows the model card: types, ranges, categories, missing-value policy."""

from __future__ import annotations

import math

import msgspec
import pytest

from decision_service.scoring import application_type
from decision_service.scoring.application import (
    ApplicationDecoder,
    InvalidApplication,
    decode_application,
    field_errors,
)

GOOD = {
    "application_id": "APP-1",
    "age": 30,
    "seniority": 3,
    "home": "rent",
    "marital": "single",
    "records": False,
    "job": "fixed",
    "term": 36,
    "expenses": 50,
    "income": 150,
    "assets": 1000,
    "debt": 0,
    "amount": 900,
    "price": 1200,
}


@pytest.fixture(scope="module")
def app_type(scorer):
    return application_type(scorer.card)


def decode(app_type, body: dict):
    return msgspec.json.decode(msgspec.json.encode(body), type=app_type)


def test_every_example_application_decodes(app_type, application_lines) -> None:
    for line in application_lines:
        msgspec.json.decode(line, type=app_type)


def test_fields_follow_the_card(app_type, scorer) -> None:
    names = [f.name for f in msgspec.structs.fields(app_type)]
    assert names[0] == "application_id"
    assert set(names[1:]) == set(scorer.card.feature_names)


def test_optional_fields_may_be_absent_or_null_and_are_scored_as_missing(app_type, scorer):
    body = {k: v for k, v in GOOD.items() if k not in ("income", "home")} | {"assets": None}
    app = decode(app_type, body)
    assert app.income is None and app.home is None and app.assets is None
    row = scorer.features(app)
    assert math.isnan(row[scorer.card.feature_names.index("income")])


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"age": 130}, "$.age", "<= 100"),
        ({"age": "thirty"}, "$.age", "Expected `int`"),
        ({"home": "castle"}, "$.home", "Invalid enum value 'castle'"),
        ({"amount": -5}, "$.amount", ">= 1"),
        ({"records": "yes"}, "$.records", "Expected `bool`"),
        ({"incme": 150}, "$.incme", "unknown field"),
        ({"application_id": ""}, "$.application_id", "length >= 1"),
    ],
)
def test_a_bad_field_is_named(app_type, change, path, message) -> None:
    body = msgspec.json.encode(GOOD | change)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body, type=app_type)
    errors = field_errors(app_type, body)
    assert [e.field for e in errors] == [path]
    assert message in errors[0].message


def test_required_fields_are_never_guessed(app_type) -> None:
    body = msgspec.json.encode({k: v for k, v in GOOD.items() if k != "term"})
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body, type=app_type)
    assert [e.field for e in field_errors(app_type, body)] == ["$.term"]


def test_every_bad_field_is_named_not_just_the_first(app_type) -> None:
    body = msgspec.json.encode(GOOD | {"age": 5, "job": "pirate", "price": "lots", "x": 1})
    fields = {e.field for e in field_errors(app_type, body)}
    assert fields == {"$.age", "$.job", "$.price", "$.x"}


def test_malformed_json_is_reported_at_the_root(app_type) -> None:
    assert field_errors(app_type, b"{not json")[0].field == "$"
    assert field_errors(app_type, b"[1, 2]")[0].message == "expected a JSON object"


def test_an_integral_float_is_the_integer_and_a_fraction_is_refused(app_type) -> None:
    decode = ApplicationDecoder(app_type)
    app = decode(msgspec.json.encode(GOOD | {"age": 30.0, "term": 3.6e1}))
    assert (app.age, app.term) == (30, 36) and type(app.age) is int  # JSON Schema's integer
    assert decode(msgspec.json.encode(GOOD)) == app
    assert decode_application(app_type, msgspec.json.encode(GOOD | {"age": 30.0})) == app
    with pytest.raises(InvalidApplication) as refused:
        decode(msgspec.json.encode(GOOD | {"age": 30.5}))
    assert [e.field for e in refused.value.errors] == ["$.age"]
    with pytest.raises(msgspec.ValidationError):
        decode_application(app_type, msgspec.json.encode(GOOD | {"age": 30.5}))
    # another field's error does not make an integral float an error too
    with pytest.raises(InvalidApplication) as both:
        decode(msgspec.json.encode(GOOD | {"age": 30.0, "home": "castle"}))
    assert [e.field for e in both.value.errors] == ["$.home"]
    for still_refused in ({"age": True}, {"age": "30"}, {"age": 130.0}):
        with pytest.raises(InvalidApplication):
            decode(msgspec.json.encode(GOOD | still_refused))


def test_an_id_with_a_trailing_newline_is_refused(app_type) -> None:
    with pytest.raises(InvalidApplication) as refused:
        ApplicationDecoder(app_type)(msgspec.json.encode(GOOD | {"application_id": "APP-1\n"}))
    assert [e.field for e in refused.value.errors] == ["$.application_id"]
