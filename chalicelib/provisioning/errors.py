"""Errors of the workflows' Task steps. Their class names are the error names that the state
machines' Retry and Catch rules match, so renaming one means editing infra/*.asl.json."""


class HyperstackRetryable(Exception):
    """Hyperstack answered 429 or 5xx, or did not answer: worth trying again."""


class StoreRetryable(Exception):
    """DynamoDB or Step Functions throttled, failed with a 5xx, or did not answer: worth trying again.
    Never a reason to compensate (delete a VM): every step retries it for minutes (infra/*.asl.json)."""


class ProvisioningFailed(Exception):
    """A failure a retry will not mend; the message is shown to the admin."""


class ReplicaGone(Exception):
    """The replica was deleted, or moved on, while this step ran."""


class NotIdle(Exception):
    """An idle check's hibernation found the replica used since the check read it: it keeps serving."""


class HibernationRefused(Exception):
    """The VM's flavor cannot hibernate: the replica stays serving, with the reason."""


class StillHibernating(Exception):
    """A wake asked while the VM was still hibernating: retried until it is hibernated."""
