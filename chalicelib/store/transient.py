"""Telling a failure a retry may mend (throttling, a 5xx, no answer) from one it will not.

PynamoDB wraps botocore's errors (GetError, UpdateError, ... around a ClientError or a BotoCoreError): the
cause chain is read down to botocore's own error.
"""

from __future__ import annotations

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

# DynamoDB's and Step Functions' answers that say "not now" rather than "no".
_TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
    "InternalServerError", "InternalFailure", "ServiceUnavailable", "TransactionConflictException",
    "TransactionInProgressException",
})


def is_transient(error: BaseException) -> bool:
    """Whether `error` (from PynamoDB, boto3 or botocore) is worth trying again."""
    seen: BaseException | None = error
    for _ in range(8):  # a cause chain is short; a cycle must not hold a step up
        if seen is None:
            return False
        if isinstance(seen, (ConnectionError, HTTPClientError)):  # no answer: refused, reset, timed out
            return True
        if isinstance(seen, ClientError):
            answer = seen.response
            status = int(answer.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return answer.get("Error", {}).get("Code") in _TRANSIENT_CODES or status >= 500
        seen = getattr(seen, "cause", None) or seen.__cause__
    return False
