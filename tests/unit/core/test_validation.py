"""chalicelib.core.validation: JSON-Schema checks with the original toolkit's (marshmallow) messages."""

import json
import random

import pytest

from chalicelib.admin.schemas import (
    CREATE_MODEL,
    CREATE_REPLICA,
    DELETE_API_KEY,
    GENERATE_API_KEY,
    MAX_ALLOWED_RPM,
    MAX_ID,
    UPDATE_REPLICA,
    VM_CREATION_DETAILS,
)
from chalicelib.core.errors import ValidationFailed
from chalicelib.core.patterns import matches
from chalicelib.core.validation import boolean, field_error, integer, validate
from tests.unit.conftest import VM_DETAILS

MISSING = ["Missing data for required field."]
NOT_NULL = ["Field may not be null."]
UNKNOWN = ["Unknown field."]
MODEL_NAME_MESSAGE = "Must not contain spaces, '%', '?' or '#', nor start or end with '/'."
CONTROL_MESSAGE = "Must not contain control characters."


def obj(properties, required=(), strict=True):
    schema = {"type": "object", "properties": properties, "required": list(required)}
    if strict:
        schema["additionalProperties"] = False
    return schema


def errors_of(schema, data):
    """The errors as a client reads them, i.e. after a JSON round trip."""
    with pytest.raises(ValidationFailed) as raised:
        validate(schema, data)
    return json.loads(json.dumps(raised.value.errors))


INTEGER = obj({"n": {"type": "integer"}})
RANGED = obj({"n": {"type": "integer", "minimum": 1, "maximum": 10}})


# Valid data


def test_valid_data_is_returned_as_given():
    schema = obj({"s": {"type": "string"}, "n": {"type": "integer"}, "b": {"type": "boolean"}})

    assert validate(schema, {"s": "x", "n": 3, "b": False}) == {"s": "x", "n": 3, "b": False}


def test_optional_field_without_default_is_left_out():
    assert validate(obj({"s": {"type": "string"}}), {}) == {}


# Coercion


@pytest.mark.parametrize(("given", "expected"), [("5", 5), ("-5", -5), ("0", 0), (" 12 ", 12)])
def test_numeric_string_is_coerced_to_an_integer(given, expected):
    assert validate(INTEGER, {"n": given}) == {"n": expected}


def test_integer_valued_float_is_an_integer():
    assert validate(INTEGER, {"n": 5.0}) == {"n": 5}


@pytest.mark.parametrize("given", ["abc", "5.5", "", "1e3", 5.5, True, False, [], {}],
                         ids=["word", "decimal-string", "empty", "exponent", "fraction", "true", "false", "list",
                              "object"])
def test_non_integer_is_not_a_valid_integer(given):
    assert errors_of(INTEGER, {"n": given}) == {"n": ["Not a valid integer."]}


def test_coerced_string_is_range_checked():
    assert errors_of(RANGED, {"n": "11"}) == {
        "n": ["Must be greater than or equal to 1 and less than or equal to 10."]
    }


def test_string_is_not_coerced_from_a_number():
    assert errors_of(obj({"s": {"type": "string"}}), {"s": 5}) == {"s": ["Not a valid string."]}


@pytest.mark.parametrize(("given", "expected"), [(True, True), (False, False), ("true", True), ("false", False)])
def test_boolean_and_its_string_forms_are_booleans(given, expected):
    assert validate(obj({"b": {"type": "boolean"}}), {"b": given}) == {"b": expected}


@pytest.mark.parametrize("given", ["maybe", 2, [], {}])
def test_non_boolean_is_not_a_valid_boolean(given):
    assert errors_of(obj({"b": {"type": "boolean"}}), {"b": given}) == {"b": ["Not a valid boolean."]}


@pytest.mark.parametrize(
    ("schema", "data", "errors"),
    [
        (INTEGER, {"n": "5"}, {"n": ["Not a valid integer."]}),
        (obj({"b": {"type": "boolean"}}), {"b": "true"}, {"b": ["Not a valid boolean."]}),
    ],
    ids=["integer", "boolean"],
)
def test_strict_validation_does_not_coerce_strings(schema, data, errors):
    with pytest.raises(ValidationFailed) as raised:
        validate(schema, data, lenient=False)

    assert raised.value.errors == errors


def test_integer_fields_of_a_request_schema_accept_numeric_strings():
    request = validate(GENERATE_API_KEY, {"user_id": "alice", "allowed_rpm": "30"})

    assert request["allowed_rpm"] == 30


# Messages


def test_missing_required_field_message():
    assert errors_of(obj({"s": {"type": "string"}}, required=["s"]), {}) == {"s": MISSING}


def test_unknown_field_message():
    assert errors_of(obj({"s": {"type": "string"}}), {"s": "x", "t": 1}) == {"t": UNKNOWN}


def test_extra_fields_pass_when_the_schema_allows_them():
    assert validate(obj({"s": {"type": "string"}}, strict=False), {"s": "x", "t": 1}) == {"s": "x", "t": 1}


@pytest.mark.parametrize(
    ("bounds", "value", "message"),
    [
        ({"minimum": 1, "maximum": 10}, 0, "Must be greater than or equal to 1 and less than or equal to 10."),
        ({"minimum": 1, "maximum": 10}, 11, "Must be greater than or equal to 1 and less than or equal to 10."),
        ({"minimum": 1}, 0, "Must be greater than or equal to 1."),
        ({"maximum": 10}, 11, "Must be less than or equal to 10."),
    ],
    ids=["below-range", "above-range", "below-minimum", "above-maximum"],
)
def test_range_messages(bounds, value, message):
    schema = obj({"n": {"type": "integer", **bounds}})

    assert errors_of(schema, {"n": value}) == {"n": [message]}


@pytest.mark.parametrize("value", [1, 10])
def test_range_bounds_are_inclusive(value):
    assert validate(RANGED, {"n": value}) == {"n": value}


@pytest.mark.parametrize(
    ("bounds", "value", "message"),
    [
        ({"minLength": 2, "maxLength": 4}, "a", "Length must be between 2 and 4."),
        ({"minLength": 2, "maxLength": 4}, "abcde", "Length must be between 2 and 4."),
        ({"minLength": 1}, "", "Shorter than minimum length 1."),
        ({"maxLength": 3}, "abcd", "Longer than maximum length 3."),
    ],
    ids=["too-short", "too-long", "below-minimum", "above-maximum"],
)
def test_length_messages(bounds, value, message):
    schema = obj({"s": {"type": "string", **bounds}})

    assert errors_of(schema, {"s": value}) == {"s": [message]}


def test_list_length_message():
    schema = obj({"l": {"type": "array", "items": {"type": "string"}, "maxItems": 2}})

    assert errors_of(schema, {"l": ["a", "b", "c"]}) == {"l": ["Longer than maximum length 2."]}


def test_enum_message_lists_the_choices():
    schema = obj({"e": {"type": "string", "enum": ["tcp", "udp"]}})

    assert errors_of(schema, {"e": "icmp"}) == {"e": ["Must be one of: tcp, udp."]}


def test_pattern_uses_the_schemas_own_message():
    schema = obj({"s": {"type": "string", "pattern": "^a+$", "x-pattern-message": "Only a's."}})

    assert errors_of(schema, {"s": "ab"}) == {"s": ["Only a's."]}


def test_pattern_without_own_message_has_a_generic_one():
    schema = obj({"s": {"type": "string", "pattern": "^a+$"}})

    assert errors_of(schema, {"s": "ab"}) == {"s": ["String does not match expected pattern."]}


def test_list_of_the_wrong_type_is_not_a_valid_list():
    schema = obj({"l": {"type": "array", "items": {"type": "string"}}})

    assert errors_of(schema, {"l": "abc"}) == {"l": ["Not a valid list."]}


def test_every_failing_field_is_reported_at_once():
    schema = obj({"a": {"type": "string"}, "b": {"type": "integer"}}, required=["a"])

    assert errors_of(schema, {"b": "x", "c": 1}) == {"a": MISSING, "b": ["Not a valid integer."], "c": UNKNOWN}


# Shapes of nested errors


def test_nested_object_errors_are_nested_under_the_field():
    assert errors_of(CREATE_REPLICA, {"create_vm": True, "vm_creation_details": {
        name: value for name, value in VM_DETAILS.items() if name != "port"
    }}) == {"vm_creation_details": {"port": MISSING}}


def test_nested_object_of_the_wrong_type_is_invalid_input():
    assert errors_of(CREATE_REPLICA, {"vm_creation_details": "big"}) == {"vm_creation_details": ["Invalid input type."]}


def test_list_item_errors_are_keyed_by_position():
    schema = obj({"l": {"type": "array", "items": {"type": "integer"}}})

    errors = errors_of(schema, {"l": [1, "x", 3, "y"]})

    assert errors == {"l": {"1": ["Not a valid integer."], "3": ["Not a valid integer."]}}


def test_errors_in_objects_in_a_list_are_keyed_by_position_then_field():
    rules = [{"port_range_min": 1, "port_range_max": 2}, {"port_range_min": 1}]

    assert errors_of(VM_CREATION_DETAILS, {**VM_DETAILS, "security_rules": rules}) == {
        "security_rules": {"1": {"port_range_max": MISSING}}
    }


def test_unknown_field_in_a_nested_object_is_reported_there():
    assert errors_of(VM_CREATION_DETAILS, {**VM_DETAILS, "gpu": "A100"}) == {"gpu": UNKNOWN}


def test_top_level_of_the_wrong_type_is_a_schema_error():
    assert errors_of(GENERATE_API_KEY, ["alice"]) == {"_schema": ["Invalid input type."]}


def test_field_error_names_one_field():
    assert field_error("endpoint", "Bad.").errors == {"endpoint": ["Bad."]}


def test_validation_failure_is_a_400_with_the_errors_as_body():
    error = field_error("endpoint", "Bad.")

    assert error.status == 400
    assert error.body() == {"errors": {"endpoint": ["Bad."]}}


# Null


def test_null_is_kept_where_the_type_allows_it():
    schema = obj({"n": {"type": ["integer", "null"]}})

    assert validate(schema, {"n": None}) == {"n": None}


def test_null_is_refused_where_the_type_does_not_allow_it():
    assert errors_of(INTEGER, {"n": None}) == {"n": NOT_NULL}


def test_null_for_a_required_field_is_not_missing_but_null():
    schema = obj({"s": {"type": "string"}}, required=["s"])

    assert errors_of(schema, {"s": None}) == {"s": NOT_NULL}


def test_null_top_level_body_is_a_schema_error():
    assert errors_of(GENERATE_API_KEY, None) == {"_schema": NOT_NULL}


def test_null_models_means_all_models():
    assert validate(GENERATE_API_KEY, {"user_id": "alice", "models": None})["models"] is None


def test_nullable_integer_still_coerces_numeric_strings():
    schema = obj({"n": {"type": ["integer", "null"]}})

    assert validate(schema, {"n": "7"}) == {"n": 7}


# Defaults


def test_absent_field_gets_its_default():
    schema = obj({"n": {"type": "integer", "default": 160}})

    assert validate(schema, {}) == {"n": 160}


def test_given_value_wins_over_the_default():
    schema = obj({"n": {"type": "integer", "default": 160}})

    assert validate(schema, {"n": 3}) == {"n": 3}


def test_generate_api_key_defaults_allowed_rpm_to_160():
    assert validate(GENERATE_API_KEY, {"user_id": "alice"})["allowed_rpm"] == 160


def test_create_replica_defaults_create_vm_to_false():
    assert validate(CREATE_REPLICA, {"endpoint": "http://h:8000/v1"})["create_vm"] is False


def test_vm_creation_details_default_assign_floating_ip_to_true():
    assert validate(VM_CREATION_DETAILS, VM_DETAILS)["assign_floating_ip"] is True


def test_security_rule_defaults_are_filled_in_inside_the_list():
    rules = [{"port_range_min": 80, "port_range_max": 80}]

    details = validate(VM_CREATION_DETAILS, {**VM_DETAILS, "security_rules": rules})

    (rule,) = details["security_rules"]
    assert (rule["direction"], rule["protocol"], rule["ethertype"]) == ("ingress", "tcp", "IPv4")


@pytest.mark.parametrize("port", [-1, 65536])
def test_security_rule_port_outside_0_to_65535_is_refused(port):
    rules = [{"port_range_min": port, "port_range_max": port}]

    errors = errors_of(VM_CREATION_DETAILS, {**VM_DETAILS, "security_rules": rules})

    assert set(errors["security_rules"]["0"]) == {"port_range_min", "port_range_max"}


def test_validation_does_not_change_the_data_it_reads():
    data = {"user_id": "alice", "allowed_rpm": "30"}

    validate(GENERATE_API_KEY, data)

    assert data == {"user_id": "alice", "allowed_rpm": "30"}


# Names: no control characters, and a pattern's `$` is not satisfied before a final newline


def test_model_name_with_trailing_newline_is_refused():
    assert errors_of(CREATE_MODEL, {"name": "org/model\n"}) == {"name": [MODEL_NAME_MESSAGE]}


@pytest.mark.parametrize("character", ["\x00", "\t", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"],
                         ids=["nul", "tab", "escape", "unit-separator", "delete", "next-line", "c1-last"])
def test_model_name_with_a_control_character_is_refused(character):
    assert errors_of(CREATE_MODEL, {"name": f"org/mo{character}del"}) == {"name": [MODEL_NAME_MESSAGE]}


@pytest.mark.parametrize("space", ["\xa0", "\u2003", "\u3000", "\ufeff"],
                         ids=["no-break", "em", "ideographic", "byte-order-mark"])
def test_model_name_with_a_unicode_space_is_refused(space):
    assert errors_of(CREATE_MODEL, {"name": f"org/mo{space}del"}) == {"name": [MODEL_NAME_MESSAGE]}


def test_model_name_of_other_scripts_is_accepted():
    assert validate(CREATE_MODEL, {"name": "org/模型-ü"}) == {"name": "org/模型-ü"}


@pytest.mark.parametrize("user_id", ["alice\n", "al\x00ice", "alice\x7f", "al\x9bice"],
                         ids=["trailing-newline", "nul", "delete", "c1"])
def test_user_id_with_a_control_character_is_refused(user_id):
    assert errors_of(GENERATE_API_KEY, {"user_id": user_id}) == {"user_id": [CONTROL_MESSAGE]}


def test_user_id_with_a_control_character_is_refused_when_deleting_a_key():
    assert errors_of(DELETE_API_KEY, {"user_id": "alice\n", "api_key_id": 1}) == {"user_id": [CONTROL_MESSAGE]}


def test_empty_user_id_is_still_accepted_when_deleting_a_key():
    assert validate(DELETE_API_KEY, {"user_id": "", "api_key_id": 1}) == {"user_id": "", "api_key_id": 1}


def test_vm_name_with_trailing_newline_is_refused():
    errors = errors_of(VM_CREATION_DETAILS, {**VM_DETAILS, "name": "vm-1\n"})

    assert list(errors) == ["name"]


@pytest.mark.parametrize("field", ["environment_name", "image_name", "flavor_name", "key_name"])
def test_vm_resource_name_with_a_control_character_is_refused(field):
    errors = errors_of(VM_CREATION_DETAILS, {**VM_DETAILS, field: "default\n"})

    assert errors == {field: [CONTROL_MESSAGE]}


# Numeric strings: ASCII digits only


@pytest.mark.parametrize("given", ["١٢", "１２", "1_000", "+5", "12\n", "\t12", "1 2", "5.0", "0x10"],
                         ids=["arabic-indic", "fullwidth", "underscore", "plus", "trailing-newline", "tab",
                              "inner-space", "decimal", "hex"])
def test_numeric_string_of_anything_but_ascii_digits_is_not_a_valid_integer(given):
    assert errors_of(INTEGER, {"n": given}) == {"n": ["Not a valid integer."]}


def test_numeric_string_with_leading_zeros_is_an_integer():
    assert validate(INTEGER, {"n": "007"}) == {"n": 7}


def test_numeric_string_of_more_than_19_digits_is_not_a_valid_integer():
    assert errors_of(INTEGER, {"n": "1" * 20}) == {"n": ["Not a valid integer."]}


@pytest.mark.parametrize("given", ["abc", "", "١٢", 1.5, True, [], {}])
def test_integer_field_of_a_request_schema_keeps_the_type_message(given):
    assert errors_of(GENERATE_API_KEY, {"user_id": "alice", "allowed_rpm": given}) == {
        "allowed_rpm": ["Not a valid integer."]
    }


@pytest.mark.parametrize("given", [0, "0", "1000001", " 0 "])
def test_integer_field_of_a_request_schema_range_checks_numbers_and_numeric_strings_alike(given):
    assert errors_of(GENERATE_API_KEY, {"user_id": "alice", "allowed_rpm": given}) == {
        "allowed_rpm": ["Must be greater than or equal to 1 and less than or equal to 1000000."]
    }


def test_nullable_integer_field_of_a_request_schema_accepts_null_and_numeric_strings():
    assert validate(UPDATE_REPLICA, {"rate_limit": None}) == {"rate_limit": None}
    assert validate(UPDATE_REPLICA, {"rate_limit": "60"}) == {"rate_limit": 60}


PUBLISHED_RANGES = [(1, MAX_ALLOWED_RPM), (0, 65535), (1, 65535), (1, MAX_ID), (1, 10), (0, 1), (3, 250), (7, 7)]


def _numeric_strings(low, high):
    numbers = {0, 1, 9, 10, 99, 100, low - 1, low, low + 1, high - 1, high, high + 1, 10 * high, 10**19}
    numbers |= {random.Random(low ^ high).randint(0, 2 * high) for _ in range(200)}
    spellings = ["{}", "-{}", "0{}", "00{}", " {} ", "-0{}", "{}\n", "+{}", "{}_0", "\t{}", "{}.0"]
    return [spelling.format(number) for number in sorted(numbers) for spelling in spellings]


@pytest.mark.parametrize(("low", "high"), PUBLISHED_RANGES)
def test_published_numeric_string_pattern_matches_exactly_the_strings_accepted(low, high):
    schema = integer(low, high)

    disagreements = [given for given in _numeric_strings(low, high)
                     if matches(schema["pattern"], given) != _accepts(obj({"n": schema}), {"n": given})]

    assert disagreements == []


# Booleans: their string and 0/1 forms, all published


@pytest.mark.parametrize(("given", "expected"), [("TRUE", True), ("0", False), (1, True), (0, False), (1.0, True)])
def test_boolean_field_of_a_request_schema_reads_the_published_forms(given, expected):
    assert validate(CREATE_REPLICA, {"create_vm": given})["create_vm"] is expected


@pytest.mark.parametrize("given", ["maybe", "yes", "2", 2, -1, 0.5, [], {}])
def test_boolean_field_of_a_request_schema_refuses_other_values_as_not_a_valid_boolean(given):
    assert errors_of(CREATE_REPLICA, {"create_vm": given}) == {"create_vm": ["Not a valid boolean."]}


def test_published_boolean_forms_are_exactly_those_read_as_booleans():
    schema = obj({"b": boolean(default=False)})

    assert all(isinstance(validate(schema, {"b": form})["b"], bool) for form in schema["properties"]["b"]["enum"])


def test_every_pattern_of_the_request_schemas_compiles():
    for pattern in _patterns([GENERATE_API_KEY, DELETE_API_KEY, CREATE_MODEL, CREATE_REPLICA, UPDATE_REPLICA]):
        matches(pattern, "")


def _patterns(schema):
    if isinstance(schema, dict):
        yield from ([schema["pattern"]] if isinstance(schema.get("pattern"), str) else [])
        for value in schema.values():
            yield from _patterns(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _patterns(value)


def _accepts(schema, data):
    try:
        validate(schema, data)
    except ValidationFailed:
        return False
    return True


@pytest.mark.parametrize("expires_at", ["2030-01-01T00:00:00\x00", "2030-01-01\n"], ids=["nul", "trailing-newline"])
def test_expiry_with_a_control_character_is_not_a_valid_datetime(expires_at):
    assert errors_of(GENERATE_API_KEY, {"user_id": "alice", "expires_at": expires_at}) == {
        "expires_at": ["Not a valid datetime."]
    }
