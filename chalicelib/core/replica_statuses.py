"""A provisioned replica's `vm_status`, from request to serving or to its end."""

PENDING = "PENDING"  # stored; the workflow has not started on it yet
CREATING_VM = "CREATING_VM"  # asking Hyperstack for the VM, waiting for it to be ACTIVE
BOOTING = "BOOTING"  # the VM is up; waiting for the model to answer GET /v1/models
SUCCESS = "SUCCESS"  # serving: chat requests may go to it
FAILED = "FAILED"  # provisioning failed and its VM was deleted; error_message says why
DELETING = "DELETING"  # teardown is deleting its VM, then its rows
DELETE_FAILED = "DELETE_FAILED"  # teardown failed: the VM may still exist; error_message says why
HIBERNATING = "HIBERNATING"  # idle: its VM is being hibernated (no request goes to it any more)
HIBERNATED = "HIBERNATED"  # its VM is hibernated: only the root disk and the IP are billed
WAKING = "WAKING"  # its VM is being restored, then the model checked, as in provisioning

IN_PROGRESS = (PENDING, CREATING_VM, BOOTING)
# Statuses in which a replica keeps its recorded VM (`vm_id`) and no workflow may make another.
HOLDING_VM = (SUCCESS, HIBERNATING, HIBERNATED, WAKING)
# A model whose replicas are all dormant is woken by its first request.
DORMANT = (HIBERNATING, HIBERNATED, WAKING)


def takes_requests(vm_status: str | None, endpoint: str | None) -> bool:
    """A replica is sent requests once SUCCESS with an endpoint: the chat route's rule, and the model list's."""
    return vm_status == SUCCESS and bool(endpoint)
