"""A fake Hyperstack API on loopback: the VM and VM-firewall-rule routes the provisioning workflow uses.

    python -m infra.local.fake_hyperstack --port 8002 [--mock-replicas]

In a test:

    with FakeHyperstack(active_after_seconds=0.2, on_active=start_replica) as fake:
        client = HyperstackClient(fake.api_key, host=fake.url)   # fake.url ends in /v1, like the SDK's host
        fake.fail_next_creates = 1                               # switches flip while it runs

This module is the thin HTTP layer: it maps the SDK's REST calls onto the VM state model in
infra/local/hyperstack_vms.py (VMs, their transitions, the fault switches), whose docstring says how a VM
lives. Answers follow the official SDK's models (CreateInstancesResponse, Instances, Instance, ResponseModel,
SecurityGroupRule, ErrorResponseModel), so the real SDK parses every one. Requests need the `api_key` header.
`GET /core/virtual-machines` takes `page` (from 1), `pageSize`, `search` (case-insensitive part of the name, or
the id) and `environment`; answers oldest first with `count`, the total that matched.
`GET /core/virtual-machines/{id}/hibernate?retain_ip=true|false` (absent: false) and `.../hibernate-restore` answer
a ResponseModel; 404 for an unknown VM; 400 `bad_request` (Hyperstack's answer, it has no 409 for these) for a
VM in the wrong state or, for a hibernate, a flavor in `fake.flavors_without_hibernation` (a set tests fill).
`hibernate_after_seconds`/`restore_after_seconds` pace the transitions; `fake.hibernate_calls`/`restore_calls`
list the VM ids asked for.

Failure switches (attributes of the fake, kept in the model; counters count down as they fire):
- `fail_next_creates`: 500 without creating; `fail_next_creates_after_creating`: create, then 500.
- `vm_goes_to_error`: VMs created while set go ERROR instead of ACTIVE; `never_active`: they stay CREATING.
- `fail_deletes`: 500 without deleting, N times; `fail_all_deletes`: always.
- `refuse_deleting_building`: 409 to deleting a VM still CREATING, as Hyperstack does while it builds.
- `slow_create_seconds`: a create makes its VM at once but answers that much later (a create call in flight).
- `rate_limit_next`: 429 to the next N requests; `status_false_next`: 200 `{"status": false}` to the next N
  requests, doing nothing; `status_false_next_deletes`: the same to the next N VM deletes only (other callers,
  the reconciler's listing among them, cannot take it first).
- `stall_next`: the next N requests are read, then never answered (for `stall_seconds`, or until `stop()`).
- `impostor_certificate`: the next N VMs to turn ACTIVE are served (by `on_active`'s server, see
  infra/local/served_vms.py) with a certificate of their own instead of their user_data's: an impostor.
- `fail_next_hibernates`, `fail_next_restores`: 500 to the next N hibernates or restores, doing nothing.
- `restore_goes_to_error`: the next N restores (True: the next one) end in ERROR instead of ACTIVE.
- `outage(seconds)`: every request answers 503 for that long, doing nothing (the VMs move on meanwhile).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from infra.local.hyperstack_vms import (
    ActionRefused,
    InjectedFault,
    InvalidRequest,
    VmBusy,
    VmCallback,
    VmFleet,
    VmNotFound,
)
from infra.local.served_vms import ServedVms, mock_replica_for
from infra.local.servers import BackgroundService, PromptHandler, StoppableServer, serve_until_signalled

API_PREFIX = "/v1"  # the SDK's host is https://infrahub-api.nexgencloud.com/v1
DEFAULT_PAGE_SIZE = 20
Answer = tuple[int, dict[str, Any]]
_VMS = r"/core/virtual-machines"
_ROUTES = [
    ("GET", re.compile(_VMS), "_list"),
    ("POST", re.compile(_VMS), "_create"),
    ("GET", re.compile(_VMS + r"/(\d+)"), "_get"),
    ("DELETE", re.compile(_VMS + r"/(\d+)"), "_delete"),
    ("POST", re.compile(_VMS + r"/(\d+)/sg-rules"), "_add_rule"),
    ("DELETE", re.compile(_VMS + r"/(\d+)/sg-rules/(\d+)"), "_delete_rule"),
    ("GET", re.compile(_VMS + r"/(\d+)/hibernate"), "_hibernate"),
    ("GET", re.compile(_VMS + r"/(\d+)/hibernate-restore"), "_restore"),
]


def _is_vm_delete(method: str, path: str) -> bool:
    return method == "DELETE" and re.fullmatch(API_PREFIX + _VMS + r"/\d+/?", urlsplit(path).path) is not None


class _Forward:
    """An attribute that lives on the fleet (or its faults): tests set `fake.<switch>` while it runs."""

    def __init__(self, *path: str) -> None:
        self._path = path

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def _target(self, instance: Any) -> Any:
        for step in self._path:
            instance = getattr(instance, step)
        return instance

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else getattr(self._target(instance), self._name)

    def __set__(self, instance: Any, value: Any) -> None:
        setattr(self._target(instance), self._name, value)


class FakeHyperstack(BackgroundService):
    thread_name = "fake-hyperstack"

    active_after_seconds = _Forward("fleet")
    floating_ip = _Forward("fleet")
    on_active = _Forward("fleet")
    on_deleted = _Forward("fleet")
    on_hibernated = _Forward("fleet")
    hibernate_after_seconds = _Forward("fleet")
    restore_after_seconds = _Forward("fleet")
    flavors_without_hibernation = _Forward("fleet")
    fail_next_creates = _Forward("fleet", "faults")
    fail_next_creates_after_creating = _Forward("fleet", "faults")
    vm_goes_to_error = _Forward("fleet", "faults")
    never_active = _Forward("fleet", "faults")
    fail_deletes = _Forward("fleet", "faults")
    fail_all_deletes = _Forward("fleet", "faults")
    refuse_deleting_building = _Forward("fleet", "faults")
    rate_limit_next = _Forward("fleet", "faults")
    stall_next = _Forward("fleet", "faults")
    status_false_next = _Forward("fleet", "faults")
    status_false_next_deletes = _Forward("fleet", "faults")
    impostor_certificate = _Forward("fleet", "faults")
    fail_next_hibernates = _Forward("fleet", "faults")
    fail_next_restores = _Forward("fleet", "faults")
    restore_goes_to_error = _Forward("fleet", "faults")

    def __init__(self, api_key: str = "fake-key", host: str = "127.0.0.1", port: int = 0,
                 active_after_seconds: float = 1.0, floating_ip: str | Callable[[dict], str] = "127.0.0.1",
                 on_active: VmCallback | None = None, on_deleted: VmCallback | None = None, *,
                 on_hibernated: VmCallback | None = None, hibernate_after_seconds: float = 0.2,
                 restore_after_seconds: float = 0.2, stall_seconds: float = 30.0, verbose: bool = False) -> None:
        super().__init__(host, port)
        self.fleet = VmFleet(active_after_seconds, floating_ip, on_active, on_deleted, on_hibernated=on_hibernated,
                             hibernate_after_seconds=hibernate_after_seconds,
                             restore_after_seconds=restore_after_seconds)
        self.api_key = api_key
        self.stall_seconds = stall_seconds
        self.slow_create_seconds = 0.0
        self.outage_until = 0.0  # monotonic time until which every request is a 503 (outage())
        self.verbose = verbose
        self._lock = threading.Lock()
        self._request_log: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        """What to pass as the SDK's host (`Configuration(host=...)`)."""
        return f"http://{self.loopback_host}:{self.port}{API_PREFIX}"

    @property
    def vms(self) -> dict[int, dict[str, Any]]:
        """A snapshot: VM id -> {id, name, status, labels, floating_ip, user_data, security_rules, port, ...}."""
        return self.fleet.snapshot()

    @property
    def hibernate_calls(self) -> list[int]:
        """The VM id of every hibernate that reached the fleet (refused or failed ones too), in order."""
        return list(self.fleet.hibernate_calls)

    @property
    def restore_calls(self) -> list[int]:
        """The VM id of every restore that reached the fleet (refused or failed ones too), in order."""
        return list(self.fleet.restore_calls)

    def live_vm_names(self) -> list[str]:
        """Names of the VMs that exist (in any status), sorted, duplicates kept."""
        return sorted(vm["name"] for vm in self.vms.values())

    @property
    def request_log(self) -> list[dict[str, Any]]:
        """Every request received: {method, path, query, body}, body as parsed JSON (or None)."""
        with self._lock:
            return copy.deepcopy(self._request_log)

    def _make_server(self, address: tuple[str, int]) -> StoppableServer:
        return _Server(address, self)

    # The request pipeline, called by the HTTP handler.

    def record(self, method: str, path: str, body: Any) -> None:
        url = urlsplit(path)
        with self._lock:
            self._request_log.append({"method": method, "path": url.path, "query": parse_qs(url.query),
                                      "body": body})

    def outage(self, seconds: float) -> None:
        """Answer every request 503 for `seconds` from now."""
        self.outage_until = time.monotonic() + seconds

    def take(self, switch: str) -> bool:
        """Consume one firing of a counting switch."""
        return self.fleet.faults.take(switch)

    def answer(self, method: str, path: str, body: Any) -> Answer:
        self.fleet.advance()
        url = urlsplit(path)
        if not url.path.startswith(API_PREFIX + "/"):
            return 404, _error("Not Found", "not_found")
        route = url.path[len(API_PREFIX):].rstrip("/")
        allowed = False
        for route_method, pattern, handler in _ROUTES:
            match = pattern.fullmatch(route)
            if match and route_method == method:
                try:
                    return getattr(self, handler)(parse_qs(url.query), body, *map(int, match.groups()))
                except InvalidRequest as error:
                    return 400, _error(str(error), "validation_error")
                except VmNotFound as error:
                    return 404, _error(str(error), "not_found")
                except VmBusy as error:
                    return 409, _error(str(error), "conflict")
                except ActionRefused as error:
                    return 400, _error(str(error), "bad_request")
                except InjectedFault as fault:
                    return 500, _error(f"Internal server error (fake: {fault.switch})", "internal_error")
            allowed = allowed or bool(match)
        return (405, _error("Method Not Allowed", "method_not_allowed")) if allowed else (404, _error("Not Found"))

    # Routes: each takes (query, body, *path ids) and answers (status, body).

    def _list(self, query: dict[str, list[str]], _body: Any) -> Answer:
        try:
            page = int(query.get("page", ["1"])[0])
            page_size = int(query.get("pageSize", [str(DEFAULT_PAGE_SIZE)])[0])
        except ValueError:
            return 400, _error("page and pageSize must be integers", "validation_error")
        matched = self.fleet.matching(query.get("search", [""])[0], query.get("environment", [""])[0])
        start = (max(page, 1) - 1) * max(page_size, 1)
        instances = [_instance(vm) for vm in matched[start:start + max(page_size, 1)]]
        return 200, {"status": True, "message": "Getting VMs successful", "instances": instances,
                     "count": len(matched), "page": page, "page_size": page_size}

    def _create(self, _query: dict[str, list[str]], body: Any) -> Answer:
        vm = self.fleet.create(body)
        time.sleep(self.slow_create_seconds)  # the VM exists already; only the answer is late
        return 200, {"status": True, "message": "Creating 1 virtual machine(s)", "instances": [_instance(vm)]}

    def _get(self, _query: dict[str, list[str]], _body: Any, vm_id: int) -> Answer:
        return 200, {"status": True, "message": "Getting VM successful", "instance": _instance(self.fleet.get(vm_id))}

    def _delete(self, _query: dict[str, list[str]], _body: Any, vm_id: int) -> Answer:
        self.fleet.delete(vm_id)
        return 200, {"status": True, "message": "Virtual machine deleted"}

    def _hibernate(self, query: dict[str, list[str]], _body: Any, vm_id: int) -> Answer:
        retain_ip = query.get("retain_ip", ["false"])[0].lower()
        if retain_ip not in ("true", "false"):
            return 400, _error("retain_ip must be true or false", "validation_error")
        self.fleet.hibernate(vm_id, retain_ip == "true")
        return 200, {"status": True, "message": f"Virtual machine {vm_id} is being hibernated"}

    def _restore(self, _query: dict[str, list[str]], _body: Any, vm_id: int) -> Answer:
        self.fleet.restore(vm_id)
        return 200, {"status": True, "message": f"Virtual machine {vm_id} is being restored from hibernation"}

    def _add_rule(self, _query: dict[str, list[str]], body: Any, vm_id: int) -> Answer:
        rule = self.fleet.add_rule(vm_id, body)
        return 200, {"status": True, "message": "Security rule created", "security_rule": rule}

    def _delete_rule(self, _query: dict[str, list[str]], _body: Any, vm_id: int, rule_id: int) -> Answer:
        self.fleet.delete_rule(vm_id, rule_id)
        return 200, {"status": True, "message": "Security rule deleted"}


def _instance(vm: dict[str, Any]) -> dict[str, Any]:
    """A VM as Hyperstack's InstanceFields."""
    return {
        "id": vm["id"], "name": vm["name"], "status": vm["status"], "labels": list(vm["labels"]),
        "fixed_ip": vm["fixed_ip"], "floating_ip": vm["floating_ip"],
        "floating_ip_status": "ATTACHED" if vm["floating_ip"] else "NOT_ATTACHED",
        "environment": {"name": vm["environment_name"], "region": "FAKE-REGION-1"},
        "flavor": {"name": vm["flavor_name"]}, "image": {"name": vm["image_name"]},
        "keypair": {"name": vm["key_name"]}, "security_rules": copy.deepcopy(vm["security_rules"]),
        "port_randomization": bool(vm["enable_port_randomization"]), "requires_public_ip": vm["assign_floating_ip"],
        "locked": False, "created_at": vm["created_at"],
    }


def _error(message: str, reason: str = "error") -> dict[str, Any]:
    """Hyperstack's ErrorResponseModel."""
    return {"status": False, "message": message, "error_reason": reason}


class _Server(StoppableServer):
    def __init__(self, address: tuple[str, int], fake: FakeHyperstack) -> None:
        self.fake = fake
        super().__init__(address, _Handler)


class _Handler(PromptHandler):
    server_version = "fake-hyperstack"
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            super().log_message(format, *args)

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        fake.record(method, self.path, body)
        if time.monotonic() < fake.outage_until:
            self._send(503, _error("Service unavailable (fake: outage)", "service_unavailable"))
        elif self.headers.get("api_key") != fake.api_key:
            self._send(401, _error("Invalid or missing api_key", "unauthorized"))
        elif fake.take("rate_limit_next"):
            self._send(429, _error("Too many requests", "rate_limited"), {"Retry-After": "1"})
        elif fake.take("stall_next"):
            self.server.stopping.wait(fake.stall_seconds)
            self.close_connection = True  # never answered: the client's timeout is what ends it
        elif fake.take("status_false_next") or (_is_vm_delete(method, self.path)
                                                 and fake.take("status_false_next_deletes")):
            self._send(200, {"status": False, "message": "Request failed (fake: status_false_next)"})
        else:
            self._send(*fake.answer(method, self.path, body))

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Hyperstack API (VMs and their firewall rules).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--api-key", default="fake-key")
    parser.add_argument("--active-after", type=float, default=1.0, help="seconds from CREATING to ACTIVE")
    parser.add_argument("--hibernate-after", type=float, default=0.2,
                        help="seconds from HIBERNATING to HIBERNATED")
    parser.add_argument("--restore-after", type=float, default=0.2, help="seconds from RESTORING to ACTIVE")
    parser.add_argument("--floating-ip", default="127.0.0.1")
    parser.add_argument("--mock-replicas", action="store_true",
                        help="run a mock vLLM replica for each ACTIVE VM whose user_data names a port and model")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    options = parser.parse_args(argv)
    served = ServedVms(mock_replica_for) if options.mock_replicas else None
    fake = FakeHyperstack(options.api_key, options.host, options.port, options.active_after, options.floating_ip,
                          served.on_active if served else None, served.on_deleted if served else None,
                          on_hibernated=served.on_hibernated if served else None,
                          hibernate_after_seconds=options.hibernate_after, restore_after_seconds=options.restore_after,
                          verbose=not options.quiet)
    try:
        serve_until_signalled(fake, f"fake Hyperstack at {{url}} (api_key {options.api_key!r})")
    finally:
        if served:
            served.stop_all()


if __name__ == "__main__":
    main()
