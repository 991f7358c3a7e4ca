"""The fake Hyperstack's VM state model: VMs, their statuses and transitions, and the fault switches.

Pure Python, no HTTP: infra/local/fake_hyperstack.py maps the SDK's REST calls onto it.

- A created VM is CREATING without IPs; `active_after_seconds` later (checked lazily, by `advance()`, which every
  read calls) it becomes ACTIVE with `floating_ip` (one address for every VM, or a function of the VM giving
  each its own), once `on_active(vm)` has returned. `vm["port"]` and
  `vm["model"]` come from the user_data marker line (chalicelib/core/vm_naming.py), else None.
- `impostor_certificate` (a counting switch): the next N VMs to turn ACTIVE reach `on_active` flagged
  `vm[IMPOSTOR_FLAG] = True`: whoever serves them answers with a certificate other than their user_data's.
- A VM whose `on_active` raises OSError (what serves it cannot bind its port: taken on this machine) lands in
  ERROR instead, with a line on stdout saying why: its replica fails at the next poll.
- Deleting removes a VM at once (no lingering DELETING) and then calls `on_deleted(vm)`.
- Hibernating (an ACTIVE VM only) makes it HIBERNATING, and `hibernate_after_seconds` later HIBERNATED once
  `on_hibernated(vm)` has returned (whoever serves it stops: the guest is saved to disk and powered off); it keeps
  its floating IP if asked to (`retain_ip`), else loses it when HIBERNATED. Restoring (a HIBERNATED VM only)
  makes it RESTORING, and `restore_after_seconds` later ACTIVE, with a floating IP again, once `on_active(vm)`
  has returned, as after a create. A flavor in `flavors_without_hibernation` is refused, as Hyperstack refuses
  flavors that cannot hibernate; so is a VM in the wrong state. Both are Hyperstack's 400 `bad_request`.
  `hibernate_calls` and `restore_calls` list the VM id of every such call that reached the fleet.
- `fail_next_hibernates`, `fail_next_restores` (counting): a 500 without doing anything. `restore_goes_to_error`
  (counting; True counts as 1): the next N restores end in ERROR instead of ACTIVE.
- Names are not unique, as far as this fake knows: a second create with a taken name makes a second VM.
"""

from __future__ import annotations

import copy
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chalicelib.core.vm_naming import parse_replica_marker

VmCallback = Callable[[dict[str, Any]], None]
RULE_FIELDS = ("direction", "ethertype", "protocol", "remote_ip_prefix")
CREATE_FIELDS = ("name", "environment_name", "flavor_name", "key_name", "count")
# Counting switches fire that many times, counting down; the flags hold while set.
COUNTING_SWITCHES = ("fail_next_creates", "fail_next_creates_after_creating", "fail_deletes", "rate_limit_next",
                     "stall_next", "status_false_next", "status_false_next_deletes", "impostor_certificate",
                     "fail_next_hibernates", "fail_next_restores", "restore_goes_to_error")
FLAG_SWITCHES = ("vm_goes_to_error", "never_active", "fail_all_deletes", "refuse_deleting_building")
IMPOSTOR_FLAG = "impostor_certificate"  # in the VM dict on_active gets (only there): serve another certificate
# A VM in one of these moves on by itself once due (`_due`), to its `_fate`: ACTIVE, HIBERNATED or ERROR.
TRANSITIONS = ("CREATING", "HIBERNATING", "RESTORING")


class VmNotFound(LookupError):
    pass


class InvalidRequest(ValueError):
    """A create or a rule that Hyperstack would refuse (a 400): nothing changes."""


class VmBusy(Exception):
    """Hyperstack's 409: the VM cannot be deleted while it is still being built."""


class ActionRefused(Exception):
    """Hyperstack's 400 `bad_request` to a hibernate or a restore: the VM's state or flavor does not allow it."""


class InjectedFault(Exception):
    """A fault switch fired: the caller answers as Hyperstack does when it fails (a 500)."""

    def __init__(self, switch: str) -> None:
        super().__init__(switch)
        self.switch = switch


class Faults:
    """The fault switches, flipped by tests while the fake runs; the HTTP layer reads the transport ones
    (`rate_limit_next`, `stall_next`, `status_false_next[_deletes]`), the fleet the rest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        for name in COUNTING_SWITCHES:
            setattr(self, name, 0)
        for name in FLAG_SWITCHES:
            setattr(self, name, False)

    def take(self, switch: str) -> bool:
        """Consume one firing of a counting switch."""
        with self._lock:
            remaining = getattr(self, switch)
            if remaining > 0:
                setattr(self, switch, remaining - 1)
            return remaining > 0


class VmFleet:
    """Every VM of the fake Hyperstack; thread-safe, as the HTTP layer serves requests concurrently."""

    def __init__(self, active_after_seconds: float = 1.0, floating_ip: str | Callable[[dict], str] = "127.0.0.1",
                 on_active: VmCallback | None = None, on_deleted: VmCallback | None = None, *,
                 on_hibernated: VmCallback | None = None, hibernate_after_seconds: float = 0.2,
                 restore_after_seconds: float = 0.2) -> None:
        self.active_after_seconds = active_after_seconds
        self.hibernate_after_seconds = hibernate_after_seconds
        self.restore_after_seconds = restore_after_seconds
        self.floating_ip = floating_ip
        self.on_active = on_active
        self.on_deleted = on_deleted
        self.on_hibernated = on_hibernated
        self.flavors_without_hibernation: set[str] = set()
        self.hibernate_calls: list[int] = []
        self.restore_calls: list[int] = []
        self.faults = Faults()
        self._lock = threading.Lock()
        self._vms: dict[int, dict[str, Any]] = {}
        self._next_vm_id = 1001
        self._next_rule_id = 5001

    def snapshot(self) -> dict[int, dict[str, Any]]:
        """VM id -> {id, name, status, labels, floating_ip, user_data, security_rules, port, ...}, oldest first."""
        self.advance()
        with self._lock:
            return {vm_id: _public(vm) for vm_id, vm in sorted(self._vms.items())}

    def get(self, vm_id: int) -> dict[str, Any]:
        self.advance()
        with self._lock:
            return _public(self._existing(vm_id))

    def matching(self, search: str, environment: str) -> list[dict[str, Any]]:
        """VMs whose name holds `search` (any case) or whose id is it, in an environment holding `environment`."""
        search, environment = search.lower(), environment.lower()
        return [vm for vm in self.snapshot().values()
                if (not search or search in vm["name"].lower() or search == str(vm["id"]))
                and environment in vm["environment_name"].lower()]

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        """A CREATING VM from a CreateInstancesPayload; InjectedFault after creating, if switched so."""
        _refuse(_create_problem(request))
        if self.faults.take("fail_next_creates"):
            raise InjectedFault("fail_next_creates")
        marker = parse_replica_marker(request.get("user_data"))
        faults = self.faults
        fate = "ERROR" if faults.vm_goes_to_error else None if faults.never_active else "ACTIVE"
        with self._lock:
            vm_id, self._next_vm_id = self._next_vm_id, self._next_vm_id + 1
            vm = {
                "id": vm_id, "name": request["name"], "status": "CREATING",
                "labels": list(request.get("labels") or []), "floating_ip": None, "fixed_ip": None,
                "user_data": request.get("user_data"),
                "security_rules": [self._new_rule(rule) for rule in request.get("security_rules") or []],
                "port": marker[0] if marker else None, "model": marker[1] if marker else None,
                "environment_name": request["environment_name"], "flavor_name": request["flavor_name"],
                "image_name": request.get("image_name"), "key_name": request["key_name"],
                "assign_floating_ip": bool(request.get("assign_floating_ip")),
                "enable_port_randomization": request.get("enable_port_randomization", True),
                "created_at": _now(), "request": copy.deepcopy(request),
                "_due": time.monotonic() + self.active_after_seconds, "_fate": fate, "_landing": False,
                "_retain_ip": True,
            }
            self._vms[vm_id] = vm
            created = _public(vm)
        if self.faults.take("fail_next_creates_after_creating"):
            raise InjectedFault("fail_next_creates_after_creating")
        return created

    def delete(self, vm_id: int) -> None:
        if self.faults.fail_all_deletes:
            raise InjectedFault("fail_all_deletes")
        if self.faults.take("fail_deletes"):
            raise InjectedFault("fail_deletes")
        with self._lock:
            building = self._vms.get(vm_id, {}).get("status") == "CREATING"
            if building and self.faults.refuse_deleting_building:
                raise VmBusy(f"Virtual machine {vm_id} is still being built")
            vm = self._vms.pop(vm_id, None)
        if vm is None:
            raise VmNotFound(f"Virtual machine {vm_id} not found")
        if not vm["_landing"]:  # mid-callback, advance() reports the deletion once the callback is done
            _notify(self.on_deleted, _public(vm))

    def hibernate(self, vm_id: int, retain_ip: bool) -> None:
        """ACTIVE -> HIBERNATING; ActionRefused for a flavor that cannot hibernate or a VM that is not ACTIVE."""
        with self._lock:
            self.hibernate_calls.append(vm_id)
        if self.faults.take("fail_next_hibernates"):
            raise InjectedFault("fail_next_hibernates")
        with self._lock:
            vm = self._existing(vm_id)
            if vm["flavor_name"] in self.flavors_without_hibernation:
                raise ActionRefused(f"Hibernation is not supported for flavor {vm['flavor_name']}")
            if vm["status"] != "ACTIVE":
                raise ActionRefused(f"Virtual machine {vm_id} is {vm['status']}: only an ACTIVE virtual machine "
                                    "can be hibernated")
            vm.update(status="HIBERNATING", _due=time.monotonic() + self.hibernate_after_seconds,
                      _fate="HIBERNATED", _retain_ip=retain_ip)

    def restore(self, vm_id: int) -> None:
        """HIBERNATED -> RESTORING; ActionRefused for a VM that is not HIBERNATED (HIBERNATING included)."""
        with self._lock:
            self.restore_calls.append(vm_id)
        if self.faults.take("fail_next_restores"):
            raise InjectedFault("fail_next_restores")
        with self._lock:
            vm = self._existing(vm_id)
            if vm["status"] != "HIBERNATED":
                raise ActionRefused(f"Virtual machine {vm_id} is {vm['status']}: only a HIBERNATED virtual machine "
                                    "can be restored")
            fate = "ERROR" if self.faults.take("restore_goes_to_error") else "ACTIVE"
            vm.update(status="RESTORING", _due=time.monotonic() + self.restore_after_seconds, _fate=fate)

    def add_rule(self, vm_id: int, rule: dict[str, Any]) -> dict[str, Any]:
        _refuse(_rule_problem(rule))
        with self._lock:
            vm = self._existing(vm_id)
            added = self._new_rule(rule)
            vm["security_rules"].append(added)
            return copy.deepcopy(added)

    def delete_rule(self, vm_id: int, rule_id: int) -> None:
        with self._lock:
            vm = self._vms.get(vm_id)
            rules = vm["security_rules"] if vm else []
            kept = [rule for rule in rules if rule["id"] != rule_id]
            if vm is None or len(kept) == len(rules):
                raise VmNotFound(f"Security rule {rule_id} of virtual machine {vm_id} not found")
            vm["security_rules"] = kept

    def advance(self) -> None:
        """Move due VMs on. A VM turns ACTIVE only after on_active returned, HIBERNATED only after on_hibernated
        returned: a poller never sees it serving before it is, nor HIBERNATED while it still serves."""
        now = time.monotonic()
        with self._lock:
            due = [vm for vm in self._vms.values() if vm["status"] in TRANSITIONS and vm["_fate"]
                   and not vm["_landing"] and now >= vm["_due"]]
            for vm in due:
                if vm["_fate"] == "ERROR":
                    vm["status"] = "ERROR"
                else:
                    vm["_landing"] = True  # claimed: its callback runs once, in this thread
            landing = [self._landed(vm) for vm in due if vm["_fate"] != "ERROR"]
        for snapshot in landing:
            if snapshot["status"] == "ACTIVE" and self.faults.take("impostor_certificate"):
                snapshot[IMPOSTOR_FLAG] = True
            failure = _notify(self.on_active if snapshot["status"] == "ACTIVE" else self.on_hibernated, snapshot)
            if snapshot["status"] == "ACTIVE" and isinstance(failure, OSError):
                # What serves the VM could not start (its port taken on this machine, say): a VM that never
                # comes up, in ERROR, so its replica fails at the next poll instead of waiting out a timeout.
                print(f"fake Hyperstack: VM {snapshot['id']} could not serve port {snapshot.get('port')} "
                      f"({failure}): ERROR", flush=True)
                snapshot.update(status="ERROR", floating_ip=None)
            with self._lock:
                vm = self._vms.get(snapshot["id"])
                if vm is not None:
                    vm.update(status=snapshot["status"], floating_ip=snapshot["floating_ip"],
                              fixed_ip=snapshot["fixed_ip"], _landing=False)
            if vm is None:  # deleted while the callback ran: report it (and undo what on_active started)
                _notify(self.on_deleted, snapshot)

    def _landed(self, vm: dict[str, Any]) -> dict[str, Any]:
        """What a VM due to land on its `_fate` (ACTIVE or HIBERNATED) will look like there."""
        if vm["_fate"] == "ACTIVE":
            return {**_public(vm), "status": "ACTIVE", "floating_ip": self._floating_ip(vm),
                    "fixed_ip": _fixed_ip(vm["id"])}
        return {**_public(vm), "status": "HIBERNATED", "floating_ip": vm["floating_ip"] if vm["_retain_ip"] else None}

    def _existing(self, vm_id: int) -> dict[str, Any]:
        vm = self._vms.get(vm_id)
        if vm is None:
            raise VmNotFound(f"Virtual machine {vm_id} not found")
        return vm

    def _new_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        rule_id, self._next_rule_id = self._next_rule_id, self._next_rule_id + 1
        fields = {key: rule.get(key) for key in (*RULE_FIELDS, "port_range_min", "port_range_max")}
        return {"id": rule_id, **fields, "status": "SUCCESS", "created_at": _now()}

    def _floating_ip(self, vm: dict[str, Any]) -> str | None:
        if not vm["assign_floating_ip"]:
            return None
        return self.floating_ip(vm) if callable(self.floating_ip) else self.floating_ip


def _refuse(problem: str | None) -> None:
    if problem:
        raise InvalidRequest(problem)


def _create_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    missing = [field for field in CREATE_FIELDS if body.get(field) in (None, "")]
    if missing:
        return f"Missing required fields: {', '.join(missing)}"
    if body["count"] != 1:
        return "This fake creates one VM per request (count must be 1)"
    if len(str(body["name"])) > 50:
        return "name: at most 50 characters"
    return next(filter(None, map(_rule_problem, body.get("security_rules") or [])), None)


def _rule_problem(rule: Any) -> str | None:
    if not isinstance(rule, dict):
        return "A security rule must be a JSON object"
    missing = [field for field in RULE_FIELDS if not rule.get(field)]
    return f"Security rule missing: {', '.join(missing)}" if missing else None


def _notify(callback: VmCallback | None, vm: dict[str, Any]) -> Exception | None:
    """Run the callback; what it raised, if anything. An OSError is the VM's own failure (advance puts it in
    ERROR); anything else is the test's or local stack's bug: shown, while the fake answers as Hyperstack would."""
    if callback is None:
        return None
    try:
        callback(vm)
    except OSError as error:
        return error
    except Exception as error:
        traceback.print_exc()
        return error
    return None


def _public(vm: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({key: value for key, value in vm.items() if not key.startswith("_")})


def _fixed_ip(vm_id: int) -> str:
    return f"10.0.{vm_id // 250 % 250}.{vm_id % 250 + 2}"


def _now() -> str:
    return datetime.now(UTC).isoformat()
