"""A small validator for the JSON-Schema subset our request schemas use.

The schemas (`chalicelib.admin.schemas`, `chalicelib.chat.schema`) are plain JSON Schema, so the same
dicts can be published in an OpenAPI document. Error messages keep the wording of the original
toolkit (marshmallow), because its clients show them:
`{"errors": {"user_id": ["Missing data for required field."]}}`.

Admin routes are lenient, as the original was: integer fields also accept numeric strings (its
admin pages send them), boolean fields their string and 0/1 forms. `integer` and `boolean` build
the schemas of such fields, so that the published document says so too. The chat route is
strict, as OpenAI and vLLM are, because its body is forwarded to the replica as it came.

Patterns are published in the OpenAPI document, where they mean what ECMA-262 says; they are
matched here with that meaning (`chalicelib.core.patterns`), not Python's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chalicelib.core.errors import ValidationFailed
from chalicelib.core.patterns import decimal_range, matches

MISSING = "Missing data for required field."
NOT_NULL = "Field may not be null."
UNKNOWN = "Unknown field."
_TYPE_MESSAGES = {
    "string": "Not a valid string.",
    "integer": "Not a valid integer.",
    "number": "Not a valid number.",
    "boolean": "Not a valid boolean.",
    "object": "Invalid input type.",
    "array": "Not a valid list.",
}
_TRUTHY = ["true", "True", "TRUE", "1", 1]
_FALSY = ["false", "False", "FALSE", "0", 0]
# ASCII digits only: int() alone would also take '1_000' and other scripts' digits ('١٢').
_INTEGER_STRING = re.compile(r" *(-?)0*([0-9]{1,19}) *")
_NO_VALUE = object()


def integer(minimum: int, maximum: int, *, nullable: bool = False) -> dict[str, Any]:
    """The schema of a lenient integer field: a number, or a numeric string, in [minimum, maximum].

    Range keywords bind numbers only, so the string form carries the same range in its pattern.
    """
    return {"type": ["integer", "string", *(["null"] if nullable else [])], "minimum": minimum, "maximum": maximum,
            "pattern": _integer_string_pattern(minimum, maximum), "x-pattern-message": _TYPE_MESSAGES["integer"]}


def boolean(default: bool) -> dict[str, Any]:
    """The schema of a lenient boolean field: true, false, or one of their string and 0/1 forms."""
    return {"type": ["boolean", "string", "integer"], "enum": [True, False, *_TRUTHY, *_FALSY],
            "x-enum-message": _TYPE_MESSAGES["boolean"], "default": default}


class _InvalidError(Exception):
    def __init__(self, messages: Any) -> None:
        self.messages = messages


def validate(schema: dict[str, Any], data: Any, *, lenient: bool = True) -> Any:
    """Return `data` checked, coerced (when lenient) and with defaults filled in.

    Raises ValidationFailed with marshmallow-shaped errors: a list of messages per field,
    nested dicts for nested objects, list positions as string keys.
    """
    try:
        return _Validator(_LENIENT if lenient else _STRICT).check(schema, data)
    except _InvalidError as invalid:
        errors = invalid.messages
        raise ValidationFailed(errors if isinstance(errors, dict) else {"_schema": errors}) from None


def field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed({field: [message]})


class _Validator:
    def __init__(self, converters: dict[str, Callable[[Any], Any]]) -> None:
        self._converters = converters

    def check(self, schema: dict[str, Any], value: Any) -> Any:
        types = schema["type"] if isinstance(schema.get("type"), list) else [schema.get("type")]
        if value is None:
            if "null" in types:
                return None
            raise _InvalidError([NOT_NULL])
        kind, value = self._convert(types, value)
        if kind == "object":
            return self._check_object(schema, value)
        if kind == "array":
            return self._check_array(schema, value)
        messages = _constraint_messages(schema, value)
        if messages:
            raise _InvalidError(messages)
        return value

    def _convert(self, types: list[str], value: Any) -> tuple[str, Any]:
        """The first of the schema's types that the value is (or converts to) wins."""
        kinds = [kind for kind in types if kind != "null"]
        for kind in kinds:
            converted = self._converters[kind](value)
            if converted is not _NO_VALUE:
                return kind, converted
        raise _InvalidError([_TYPE_MESSAGES[kinds[0]]])

    def _check_object(self, schema: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        _check_size(schema, value)
        errors: dict[str, Any] = {}
        clean: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in value:
                self._check_into(clean, errors, name, sub, value[name])
            elif name in schema.get("required", ()):
                errors[name] = [MISSING]
            elif "default" in sub:
                clean[name] = sub["default"]
        extra = schema.get("additionalProperties", True)
        for name in value.keys() - properties.keys():
            if "propertyNames" in schema and not self._name_is_valid(schema["propertyNames"], name, errors):
                continue
            if extra is False:
                errors[name] = [UNKNOWN]
            elif isinstance(extra, dict):
                self._check_into(clean, errors, name, extra, value[name])
            else:
                clean[name] = value[name]
        if errors:
            raise _InvalidError(errors)
        return clean

    def _name_is_valid(self, schema: dict[str, Any], name: str, errors: dict[str, Any]) -> bool:
        messages = _constraint_messages(schema, name)
        if messages:
            errors[name] = messages
        return not messages

    def _check_into(self, clean: dict[str, Any], errors: dict[str, Any], name: str, schema: Any, value: Any) -> None:
        try:
            clean[name] = self.check(schema, value)
        except _InvalidError as invalid:
            errors[name] = invalid.messages

    def _check_array(self, schema: dict[str, Any], value: list[Any]) -> list[Any]:
        errors: dict[str, Any] = {}
        clean: dict[str, Any] = {}
        for index, item in enumerate(value):
            self._check_into(clean, errors, str(index), schema.get("items", {"type": _ANY_SCALAR}), item)
        if errors:
            raise _InvalidError(errors)
        messages = _constraint_messages(schema, value)
        if messages:
            raise _InvalidError(messages)
        return list(clean.values())


_ANY_SCALAR = ["string", "number", "boolean", "object", "array"]


def _check_size(schema: dict[str, Any], value: dict[str, Any]) -> None:
    if len(value) < schema.get("minProperties", 0):
        # `x-missing-when-empty`: the fields an empty object is answered with, as if they were required.
        raise _InvalidError({name: [MISSING] for name in schema.get("x-missing-when-empty", ["_schema"])})
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise _InvalidError([f"Must have at most {schema['maxProperties']} entries."])


def _lenient_integer(value: Any) -> Any:
    if isinstance(value, bool):
        return _NO_VALUE
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    numeric = _INTEGER_STRING.fullmatch(value) if isinstance(value, str) else None
    if numeric:
        return int(numeric[1] + numeric[2])
    return _NO_VALUE


def _lenient_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    # 1.0 too: JSON Schema cannot tell it from 1.
    if isinstance(value, (str, int, float)):
        if value in _TRUTHY:
            return True
        if value in _FALSY:
            return False
    return _NO_VALUE


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else _NO_VALUE


def _integer(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else _NO_VALUE


def _exactly(python_type: type) -> Callable[[Any], Any]:
    return lambda value: value if isinstance(value, python_type) else _NO_VALUE


_STRICT: dict[str, Callable[[Any], Any]] = {
    "integer": _integer,
    "number": _number,
    "boolean": _exactly(bool),
    "string": _exactly(str),
    "object": _exactly(dict),
    "array": _exactly(list),
}
_LENIENT = {**_STRICT, "integer": _lenient_integer, "boolean": _lenient_boolean}


def _constraint_messages(schema: dict[str, Any], value: Any) -> list[str]:
    messages = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            messages.append(_range_message(low, high))
    if isinstance(value, (str, list)):
        shortest, longest = _length_bounds(schema, value)
        if (shortest is not None and len(value) < shortest) or (longest is not None and len(value) > longest):
            messages.append(_length_message(shortest, longest))
    # Text that becomes part of a DynamoDB key is bounded in bytes too: 256 four-byte characters are 1 KiB.
    if isinstance(value, str) and "x-max-utf8-bytes" in schema and len(value.encode("utf-8", "surrogatepass")) > (
            limit := schema["x-max-utf8-bytes"]):
        messages.append(f"Longer than maximum length {limit} bytes in UTF-8.")
    if isinstance(value, str) and "pattern" in schema and not matches(schema["pattern"], value):
        messages.append(schema.get("x-pattern-message", "String does not match expected pattern."))
    if "enum" in schema and value not in schema["enum"]:
        messages.append(schema.get("x-enum-message")
                        or "Must be one of: " + ", ".join(str(choice) for choice in schema["enum"]) + ".")
    return messages


def _length_bounds(schema: dict[str, Any], value: Any) -> tuple[int | None, int | None]:
    if isinstance(value, list):
        return schema.get("minItems"), schema.get("maxItems")
    return schema.get("minLength"), schema.get("maxLength")


def _range_message(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f"Must be greater than or equal to {low} and less than or equal to {high}."
    if low is not None:
        return f"Must be greater than or equal to {low}."
    return f"Must be less than or equal to {high}."


def _length_message(shortest: int | None, longest: int | None) -> str:
    if shortest is not None and longest is not None:
        return f"Length must be between {shortest} and {longest}."
    if shortest is not None:
        return f"Shorter than minimum length {shortest}."
    return f"Longer than maximum length {longest}."


def _integer_string_pattern(minimum: int, maximum: int) -> str:
    """The strings `_lenient_integer` reads as an integer in [minimum, maximum], as a pattern."""
    return f"^ *(?:{decimal_range(minimum, maximum)}) *$"
