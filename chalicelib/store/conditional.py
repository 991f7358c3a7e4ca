"""Conditional writes: DynamoDB applies them only if their condition holds, atomically."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

CONDITION_FAILED = "ConditionalCheckFailedException"


def condition_failed(error: PynamoDBException) -> bool:
    """True when a write was refused by its condition, rather than failing."""
    return error.cause_response_code == CONDITION_FAILED


def update_if(item: Model, actions: Sequence[Action], condition: Condition) -> bool:
    """Apply `actions` to `item` if `condition` holds; False if it did not. The item is refreshed on success."""
    return _applied(lambda: item.update(actions=list(actions), condition=condition))


def save_if(item: Model, condition: Condition) -> bool:
    """Write `item` whole if `condition` holds; False if it did not."""
    return _applied(lambda: item.save(condition=condition))


def delete_if(item: Model, condition: Condition) -> bool:
    """Delete `item` if `condition` holds; False if it did not."""
    return _applied(lambda: item.delete(condition=condition))


def _applied(write: Callable[[], object]) -> bool:
    try:
        write()
        return True
    except PynamoDBException as error:
        if condition_failed(error):
            return False
        raise
