"""Errors of the workflow's Task steps. Their class names are the error names that the state
machine's Retry and Catch rules match, so renaming one means editing infra/provisioning.asl.json."""


class HyperstackRetryable(Exception):
    """Hyperstack answered 429 or 5xx, or did not answer: worth trying again."""


class ProvisioningFailed(Exception):
    """A failure a retry will not mend; the message is shown to the admin."""


class ReplicaGone(Exception):
    """The replica was deleted, or moved on, while this step ran."""
