"""The only code that talks to Hyperstack: a thin domain wrapper around the official SDK (`hyperstack`).

The SDK costs about a second and 60 MB to import, so it is imported when a `HyperstackClient` is built, never
when this module is: the chat path may import `chalicelib.hyperstack` without paying for it.

Every failure leaves as a `HyperstackError` whose `retryable` says whether the same call may succeed later
(429, 5xx, timeouts, connection errors) or needs a person or a code change (400/401/403/404/409/422,
`status: false`). Retrying is the caller's job (Step Functions): urllib3 itself only retries failed connects,
which never reached Hyperstack, so a create is never silently sent twice.

Hyperstack may have created a VM even when `create_vm` raised (a 5xx or a timeout after the request went out):
before creating again, or before giving up, look the VM up with `find_vm_by_name`.

Hibernation (a VM keeps its root disk, and its floating IP if asked, and stops costing its GPU):
`hibernate_vm` takes an ACTIVE VM through HIBERNATING to HIBERNATED, `restore_vm` a HIBERNATED one through
RESTORING back to ACTIVE (poll `get_vm` for the outcome; a restore can end in ERROR). Hyperstack answers a
refusal of either with the same 400 (`error_reason: bad_request`), whether the VM is in the wrong state or its
flavor cannot hibernate at all, and words it as it likes. So on a 400 the wrapper reads the VM back and decides
by its status, never by the message:
- already where it was sent (HIBERNATING/HIBERNATED for a hibernate, RESTORING/ACTIVE for a restore): success,
  so a call retried after a timeout or a 5xx that in fact went through is harmless;
- hibernating a VM that is ACTIVE: `HibernationUnsupported` (a `HyperstackError`, status 400, not retryable):
  its flavor cannot hibernate, and never will; keep it running or delete it;
- in a transition that leads to a state the call accepts (CREATING/BUILD/RESTORING for a hibernate, HIBERNATING
  for a restore): retryable;
- anything else (SHUTOFF, ERROR, ...): not retryable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

SECURITY_RULE_KEYS = frozenset(
    {"direction", "protocol", "ethertype", "remote_ip_prefix", "port_range_min", "port_range_max"})

_PAGE_SIZE = 100
_MAX_PAGES = 50
# Hyperstack's VM statuses that callers act on (the API's spelling).
VM_ACTIVE = "ACTIVE"
VM_HIBERNATING = "HIBERNATING"
VM_HIBERNATED = "HIBERNATED"
VM_RESTORING = "RESTORING"  # Hyperstack's name for the way back from HIBERNATED to ACTIVE

_GONE_STATUSES = frozenset({"DELETING", "DELETED"})
# A refused hibernate or restore of a VM in one of these is Hyperstack saying "already on it": success.
_HIBERNATION_DONE = frozenset({VM_HIBERNATING, VM_HIBERNATED})
_RESTORE_DONE = frozenset({VM_RESTORING, VM_ACTIVE})
# ... in one of these, "not yet": the same call may succeed once the transition is over.
_HIBERNATION_LATER = frozenset({"CREATING", "BUILD", VM_RESTORING})
_RESTORE_LATER = frozenset({VM_HIBERNATING})
_HINTS = {
    401: "check the Hyperstack API key",
    403: "the Hyperstack API key lacks the permission for this",
    404: "not found",
    409: "conflicts with the current state (name taken, quota reached, or the VM is busy)",
    422: "Hyperstack rejected the request's content",
    429: "rate limited by Hyperstack: retry later",
}
_SERVER_HINT = "Hyperstack-side error, retry later; a create may still have happened, so look the VM up by name"


@dataclass(frozen=True)
class VmSpec:
    name: str
    environment_name: str
    image_name: str
    flavor_name: str
    key_name: str
    assign_floating_ip: bool
    user_data: str
    labels: list[str]
    security_rules: list[dict]  # {direction, protocol, ethertype, remote_ip_prefix, port_range_min, port_range_max}


@dataclass(frozen=True)
class Vm:
    id: int
    name: str
    status: str  # Hyperstack's: CREATING, BUILD, ACTIVE, ERROR, DELETING, HIBERNATING, HIBERNATED, RESTORING, ...
    floating_ip: str | None
    fixed_ip: str | None
    created_at: datetime | None = None  # aware; the reconciler's grace period counts from it


class HyperstackError(Exception):
    """A Hyperstack call failed; `retryable` says whether trying the same call again later may succeed."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status


class HibernationUnsupported(HyperstackError):
    """Hyperstack refused to hibernate an ACTIVE VM: its flavor cannot hibernate (a 400, never retryable)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False, status=400)


class HyperstackClient:
    """Hyperstack's VM calls, each with a timeout and translated errors (a VM's firewall rules come with its create).

    Holds a connection pool: reuse one client per Lambda invocation and `close()` it (or use `with`).
    """

    def __init__(self, api_key: str, host: str | None = None, timeout_seconds: float = 30) -> None:
        import hyperstack
        import urllib3

        # None: the SDK's default, https://infrahub-api.nexgencloud.com/v1 (paths are appended to it as they are)
        configuration = hyperstack.Configuration(host=host.rstrip("/") if host else None)
        configuration.api_key["apiKey"] = api_key  # the SDK sends it as the `api_key` header
        # Connect failures never reached Hyperstack, so retrying them is safe; anything else is the caller's call.
        # Without respect_retry_after_header=False urllib3 would itself sleep and resend on a 429/503 that carries
        # Retry-After (GET and DELETE), holding the Lambda while it waits.
        configuration.retries = urllib3.Retry(total=2, connect=2, read=0, redirect=0, status=0, other=0,
                                              respect_retry_after_header=False)
        self._sdk = hyperstack
        self._urllib3 = urllib3
        self._host = configuration.host
        self._timeout = float(timeout_seconds)
        self._api_client = hyperstack.ApiClient(configuration)
        self._vms = hyperstack.VirtualMachineApi(self._api_client)

    def close(self) -> None:
        self._api_client.rest_client.pool_manager.clear()

    def __enter__(self) -> HyperstackClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def find_vm_by_name(self, name: str) -> Vm | None:
        """The VM named exactly `name`; if there are several, a live one first, then the oldest (lowest id)."""
        matches = self.find_vms_by_name(name)
        if not matches:
            return None
        return min(matches, key=lambda vm: (vm.status in _GONE_STATUSES, vm.id))

    def find_vms_by_name(self, name: str) -> list[Vm]:
        """Every VM named exactly `name` (Hyperstack's search also matches names that merely contain it)."""
        return self._search(name, lambda vm_name: vm_name == name)

    def find_vms_by_prefix(self, prefix: str) -> list[Vm]:
        """Every VM whose name starts with `prefix`: one deployment's VMs, for the reconciler."""
        return self._search(prefix, lambda vm_name: vm_name.startswith(prefix))

    def _search(self, name: str, wanted: Callable[[str], bool]) -> list[Vm]:
        seen: set[int] = set()
        matches: list[Vm] = []
        for page in range(1, _MAX_PAGES + 1):
            result = self._call("list VMs", self._vms.list_vms, page=page, page_size=_PAGE_SIZE, search=name)
            instances = result.instances or []
            fresh = [instance for instance in instances if instance.id not in seen]
            seen.update(instance.id for instance in fresh)
            matches += [_to_vm(instance) for instance in fresh if wanted(instance.name or "")]
            if _last_page(result, fresh, len(seen)):
                return matches
        # A partial answer could make the caller create a duplicate VM: refuse instead.
        raise HyperstackError(f"Hyperstack listed more than {_MAX_PAGES} pages of VMs matching {name!r}",
                              retryable=False)

    def create_vm(self, spec: VmSpec) -> Vm:
        payload = self._payload(spec)
        result = self._call("create VM", self._vms.create_vms, payload)
        instances = result.instances or []
        if len(instances) != 1:
            raise HyperstackError(f"Hyperstack create VM {spec.name!r}: expected one VM in the answer, got "
                                  f"{len(instances)} (look it up by name before retrying)", retryable=False)
        return _to_vm(instances[0])

    def get_vm(self, vm_id: int) -> Vm | None:
        try:
            result = self._call(f"get VM {vm_id}", self._vms.get_vm, int(vm_id))
        except HyperstackError as error:
            if error.status == 404:
                return None
            raise
        if result.instance is None:
            raise HyperstackError(f"Hyperstack get VM {vm_id}: the answer holds no VM", retryable=False)
        return _to_vm(result.instance)

    def delete_vm(self, vm_id: int) -> None:
        try:
            self._call(f"delete VM {vm_id}", self._vms.delete_vm, int(vm_id))
        except HyperstackError as error:
            if error.status != 404:  # 404: already gone, which is what was asked
                raise

    def hibernate_vm(self, vm_id: int, retain_ip: bool = True) -> None:
        """Start hibernating an ACTIVE VM (it becomes HIBERNATING, then HIBERNATED); `retain_ip` keeps its floating
        IP attached (and billed) meanwhile, else it gets one again on restore. A VM already hibernating or
        hibernated is success; `HibernationUnsupported` when its flavor cannot hibernate; a 404 for a VM that
        does not exist is raised (not retryable)."""
        action = f"hibernate VM {vm_id}"
        try:
            self._call(action, self._vms.hibernate_vm, int(vm_id), retain_ip="true" if retain_ip else "false")
        except HyperstackError as refused:
            if refused.status != 400:
                raise
            status = self._status_after_refusal(action, vm_id, refused)
            if status in _HIBERNATION_DONE:
                return
            if status == VM_ACTIVE:
                raise HibernationUnsupported(f"{refused.message}; VM {vm_id} is ACTIVE, so its flavor cannot "
                                             "hibernate") from refused
            raise self._wrong_state(refused, vm_id, status, _HIBERNATION_LATER) from refused

    def restore_vm(self, vm_id: int) -> None:
        """Start restoring a HIBERNATED VM (it becomes RESTORING, then ACTIVE, or ERROR if the restore fails).
        A VM already restoring or ACTIVE is success; one still HIBERNATING is a retryable error."""
        action = f"restore VM {vm_id} from hibernation"
        try:
            self._call(action, self._vms.restore_vm_from_hibernation, int(vm_id))
        except HyperstackError as refused:
            if refused.status != 400:
                raise
            status = self._status_after_refusal(action, vm_id, refused)
            if status in _RESTORE_DONE:
                return
            raise self._wrong_state(refused, vm_id, status, _RESTORE_LATER) from refused

    def _status_after_refusal(self, action: str, vm_id: int, refused: HyperstackError) -> str | None:
        """The VM's status once Hyperstack refused `action` with a 400 (None: it is gone): what the 400 meant."""
        try:
            vm = self.get_vm(vm_id)
        except HyperstackError as unreadable:
            raise HyperstackError(f"{refused.message}; reading VM {vm_id} back to see why failed: "
                                  f"{unreadable.message}", retryable=unreadable.retryable,
                                  status=refused.status) from unreadable
        return vm.status if vm is not None else None

    def _wrong_state(self, refused: HyperstackError, vm_id: int, status: str | None,
                     later: frozenset[str]) -> HyperstackError:
        state = f"VM {vm_id} is {status}" if status else f"VM {vm_id} no longer exists"
        retryable = status in later
        hint = "retry once its transition is over" if retryable else "this call cannot succeed from that state"
        return HyperstackError(f"{refused.message}; {state}: {hint}", retryable=retryable, status=refused.status)

    def _payload(self, spec: VmSpec) -> Any:
        rules = [self._rule_payload(rule) for rule in spec.security_rules]
        return self._build(f"VM spec {spec.name!r}", lambda: self._sdk.CreateInstancesPayload(
            name=spec.name, environment_name=spec.environment_name, image_name=spec.image_name,
            flavor_name=spec.flavor_name, key_name=spec.key_name, count=1,
            assign_floating_ip=spec.assign_floating_ip,
            enable_port_randomization=False,  # the SDK defaults to True: the replica must listen where asked
            user_data=spec.user_data, labels=list(spec.labels), security_rules=rules))

    def _rule_payload(self, rule: dict) -> Any:
        unknown = set(rule) - SECURITY_RULE_KEYS
        if unknown:
            raise HyperstackError(f"firewall rule {rule!r}: unknown keys {sorted(unknown)}", retryable=False)
        return self._build(f"firewall rule {rule!r}", lambda: self._sdk.CreateSecurityRulePayload(**rule))

    def _build(self, what: str, make: Callable[[], T]) -> T:
        try:
            return make()
        except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
            raise HyperstackError(f"invalid {what}: {error}", retryable=False) from error

    def _call(self, action: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            result = method(*args, _request_timeout=self._timeout, **kwargs)
        except self._sdk.ApiException as error:
            raise _api_error(action, error) from error
        except self._urllib3.exceptions.HTTPError as error:
            raise self._transport_error(action, error) from error
        except OSError as error:
            raise HyperstackError(f"Hyperstack {action}: network error talking to {self._host}: {error}",
                                  retryable=True) from error
        except ValueError as error:  # an answer the SDK's models cannot parse
            raise HyperstackError(f"Hyperstack {action}: unexpected answer: {error}", retryable=False) from error
        if getattr(result, "status", None) is False:
            detail = getattr(result, "message", None) or "no message"
            raise HyperstackError(f"Hyperstack {action} failed (status false): {detail}", retryable=False)
        return result

    def _transport_error(self, action: str, error: Exception) -> HyperstackError:
        exceptions = self._urllib3.exceptions
        cause = error.reason if isinstance(error, exceptions.MaxRetryError) and error.reason else error
        if isinstance(cause, exceptions.TimeoutError) and not isinstance(cause, exceptions.NewConnectionError):
            message = f"Hyperstack {action}: no answer from {self._host} within {self._timeout:g} s"
        else:
            message = f"Hyperstack {action}: could not reach {self._host}: {cause}"
        return HyperstackError(message, retryable=True)


def _last_page(result: Any, fresh: list[Any], seen: int) -> bool:
    if not fresh:  # an empty page, or the API ignoring `page` and repeating itself
        return True
    if result.count is not None:
        return seen >= result.count
    return len(result.instances) < (result.page_size or _PAGE_SIZE)


def _to_vm(instance: Any) -> Vm:
    if instance.id is None:
        raise HyperstackError(f"Hyperstack answered a VM without an id: {instance!r}", retryable=False)
    return Vm(id=instance.id, name=instance.name or "", status=instance.status or "UNKNOWN",
              floating_ip=instance.floating_ip or None, fixed_ip=instance.fixed_ip or None,
              created_at=_aware(instance.created_at))


def _aware(moment: datetime | None) -> datetime | None:
    # Hyperstack's timestamps may come without a zone: they are UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _api_error(action: str, error: Any) -> HyperstackError:
    status = error.status or None
    if status is None:  # the SDK's own failures: TLS errors (worth a retry) or a request it could not build
        reason = str(error.reason or "")
        return HyperstackError(f"Hyperstack {action}: {reason}", retryable="SSL" in reason)
    retryable = status in (408, 429) or status >= 500
    hint = _SERVER_HINT if status >= 500 else _HINTS.get(status)
    message = f"Hyperstack {action} failed: HTTP {status}"
    if error.reason:
        message += f" {error.reason}"
    detail = _detail(error)
    if detail:
        message += f": {detail}"
    if hint:
        message += f" ({hint})"
    return HyperstackError(message, retryable=retryable, status=status)


def _detail(error: Any) -> str:
    """Hyperstack's own explanation: `message` and `error_reason` from the body, else the body's start."""
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if not isinstance(parsed, dict):
        return body.strip()[:300]
    parts = [str(parsed[key]) for key in ("message", "error_reason", "detail") if parsed.get(key)]
    return " - ".join(dict.fromkeys(parts)) or body.strip()[:300]
