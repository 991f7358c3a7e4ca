"""chalicelib.validation: JSON-Schema checks with the original toolkit's (marshmallow) messages."""

import json

import pytest

from chalicelib.errors import ValidationFailed
from chalicelib.schemas import CREATE_REPLICA, GENERATE_API_KEY, VM_CREATION_DETAILS
from chalicelib.validation import field_error, validate
from tests.unit.conftest import VM_DETAILS

MISSING = ["Missing data for required field."]
NOT_NULL = ["Field may not be null."]
UNKNOWN = ["Unknown field."]


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
