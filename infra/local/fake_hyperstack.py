"""A fake Hyperstack API on loopback: the VM and VM-firewall-rule routes the provisioning workflow uses.

    python -m infra.local.fake_hyperstack --port 8002 [--mock-replicas]

In a test:

    with FakeHyperstack(active_after_seconds=0.2, on_active=start_replica) as fake:
        client = HyperstackClient(fake.api_key, host=fake.url)   # fake.url ends in /v1, like the SDK's host
        fake.fail_next_creates = 1                               # switches flip while it runs

Answers follow the official SDK's models (CreateInstancesResponse, Instances, Instance, ResponseModel,
SecurityGroupRule, ErrorResponseModel), so the real SDK parses every one. Requests need the `api_key` header.

- A created VM is CREATING without IPs; `active_after_seconds` later (checked lazily, on the next request or
  read of `vms`) it becomes ACTIVE with `floating_ip`, once `on_active(vm)` has returned. `vm["port"]` and
  `vm["model"]` come from the user_data line `# llm-proxy-replica port=<int> model=<name>` (else None).
- DELETE removes a VM at once (no lingering DELETING) and then calls `on_deleted(vm)`.
- Names are not unique, as far as this fake knows: a second create with a taken name makes a second VM, so a
  test sees double creation in `live_vm_names()`.
- `GET /core/virtual-machines` takes `page` (from 1), `pageSize`, `search` (case-insensitive part of the
  name, or the id) and `environment`; answers oldest first with `count`, the total that matched.

Failure switches (attributes; counters count down as they fire):
- `fail_next_creates`: 500 without creating; `fail_next_creates_after_creating`: create, then 500.
- `vm_goes_to_error`: VMs created while set go ERROR instead of ACTIVE; `never_active`: they stay CREATING.
- `fail_deletes`: 500 without deleting, N times; `fail_all_deletes`: always.
- `rate_limit_next`: 429 to the next N requests; `status_false_next`: 200 `{"status": false}` to the next N
  requests, doing nothing.
- `stall_next`: the next N requests are read, then never answered (for `stall_seconds`, or until `stop()`).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chalicelib.vm_naming import parse_replica_marker
from infra.local.servers import BackgroundService, PromptHandler, StoppableServer, serve_until_signalled

API_PREFIX = "/v1"  # the SDK's host is https://infrahub-api.nexgencloud.com/v1
DEFAULT_PAGE_SIZE = 20
VmCallback = Callable[[dict[str, Any]], None]
Answer = tuple[int, dict[str, Any]]
_RULE_FIELDS = ("direction", "ethertype", "protocol", "remote_ip_prefix")
_CREATE_FIELDS = ("name", "environment_name", "flavor_name", "key_name", "count")
_VMS = r"/core/virtual-machines"
_ROUTES = [
    ("GET", re.compile(_VMS), "_list"),
    ("POST", re.compile(_VMS), "_create"),
    ("GET", re.compile(_VMS + r"/(\d+)"), "_get"),
    ("DELETE", re.compile(_VMS + r"/(\d+)"), "_delete"),
    ("POST", re.compile(_VMS + r"/(\d+)/sg-rules"), "_add_rule"),
    ("DELETE", re.compile(_VMS + r"/(\d+)/sg-rules/(\d+)"), "_delete_rule"),
]


class FakeHyperstack(BackgroundService):
    thread_name = "fake-hyperstack"

    def __init__(self, api_key: str = "fake-key", host: str = "127.0.0.1", port: int = 0,
                 active_after_seconds: float = 1.0, floating_ip: str = "127.0.0.1",
                 on_active: VmCallback | None = None, on_deleted: VmCallback | None = None, *,
                 stall_seconds: float = 30.0, verbose: bool = False) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.active_after_seconds = active_after_seconds
        self.floating_ip = floating_ip
        self.on_active = on_active
        self.on_deleted = on_deleted
        self.stall_seconds = stall_seconds
        self.verbose = verbose
        self.fail_next_creates = 0
        self.fail_next_creates_after_creating = 0
        self.vm_goes_to_error = False
        self.never_active = False
        self.fail_deletes = 0
        self.fail_all_deletes = False
        self.rate_limit_next = 0
        self.stall_next = 0
        self.status_false_next = 0
        self._lock = threading.Lock()
        self._vms: dict[int, dict[str, Any]] = {}
        self._request_log: list[dict[str, Any]] = []
        self._next_vm_id = 1001
        self._next_rule_id = 5001

    @property
    def url(self) -> str:
        """What to pass as the SDK's host (`Configuration(host=...)`)."""
        return f"http://{self.loopback_host}:{self.port}{API_PREFIX}"

    @property
    def vms(self) -> dict[int, dict[str, Any]]:
        """A snapshot: VM id -> {id, name, status, labels, floating_ip, user_data, security_rules, port, ...}."""
        self._advance()
        with self._lock:
            return {vm_id: _public(vm) for vm_id, vm in self._vms.items()}

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

    def take(self, switch: str) -> bool:
        """Consume one firing of a counting switch."""
        with self._lock:
            remaining = getattr(self, switch)
            if remaining > 0:
                setattr(self, switch, remaining - 1)
            return remaining > 0

    def answer(self, method: str, path: str, body: Any) -> Answer:
        self._advance()
        url = urlsplit(path)
        if not url.path.startswith(API_PREFIX + "/"):
            return 404, _error("Not Found", "not_found")
        route = url.path[len(API_PREFIX):].rstrip("/")
        allowed = False
        for route_method, pattern, handler in _ROUTES:
            match = pattern.fullmatch(route)
            if match and route_method == method:
                return getattr(self, handler)(parse_qs(url.query), body, *map(int, match.groups()))
            allowed = allowed or bool(match)
        return (405, _error("Method Not Allowed", "method_not_allowed")) if allowed else (404, _error("Not Found"))

    # Routes: each takes (query, body, *path ids) and answers (status, body).

    def _list(self, query: dict[str, list[str]], _body: Any) -> Answer:
        try:
            page = int(query.get("page", ["1"])[0])
            page_size = int(query.get("pageSize", [str(DEFAULT_PAGE_SIZE)])[0])
        except ValueError:
            return 400, _error("page and pageSize must be integers", "validation_error")
        search = query.get("search", [""])[0].lower()
        environment = query.get("environment", [""])[0].lower()
        with self._lock:
            matched = [vm for _, vm in sorted(self._vms.items())
                       if (not search or search in vm["name"].lower() or search == str(vm["id"]))
                       and environment in vm["environment_name"].lower()]
            start = (max(page, 1) - 1) * max(page_size, 1)
            instances = [_instance(vm) for vm in matched[start:start + max(page_size, 1)]]
        return 200, {"status": True, "message": "Getting VMs successful", "instances": instances,
                     "count": len(matched), "page": page, "page_size": page_size}

    def _create(self, _query: dict[str, list[str]], body: Any) -> Answer:
        problem = _create_problem(body)
        if problem:
            return 400, _error(problem, "validation_error")
        if self.take("fail_next_creates"):
            return 500, _error("Internal server error (fake: fail_next_creates)", "internal_error")
        vm = self._new_vm(body)
        if self.take("fail_next_creates_after_creating"):
            return 500, _error("Internal server error (fake: fail_next_creates_after_creating)", "internal_error")
        return 200, {"status": True, "message": "Creating 1 virtual machine(s)", "instances": [vm]}

    def _get(self, _query: dict[str, list[str]], _body: Any, vm_id: int) -> Answer:
        with self._lock:
            vm = self._vms.get(vm_id)
            if vm is None:
                return 404, _error(f"Virtual machine {vm_id} not found", "not_found")
            return 200, {"status": True, "message": "Getting VM successful", "instance": _instance(vm)}

    def _delete(self, _query: dict[str, list[str]], _body: Any, vm_id: int) -> Answer:
        if self.fail_all_deletes or self.take("fail_deletes"):
            return 500, _error("Internal server error (fake: failing deletes)", "internal_error")
        with self._lock:
            vm = self._vms.pop(vm_id, None)
        if vm is None:
            return 404, _error(f"Virtual machine {vm_id} not found", "not_found")
        if not vm["_activating"]:  # mid-activation, _advance() reports the deletion once on_active is done
            self._notify(self.on_deleted, _public(vm))
        return 200, {"status": True, "message": "Virtual machine deleted"}

    def _add_rule(self, _query: dict[str, list[str]], body: Any, vm_id: int) -> Answer:
        problem = _rule_problem(body)
        if problem:
            return 400, _error(problem, "validation_error")
        with self._lock:
            vm = self._vms.get(vm_id)
            if vm is None:
                return 404, _error(f"Virtual machine {vm_id} not found", "not_found")
            rule = self._new_rule(body)
            vm["security_rules"].append(rule)
        return 200, {"status": True, "message": "Security rule created", "security_rule": copy.deepcopy(rule)}

    def _delete_rule(self, _query: dict[str, list[str]], _body: Any, vm_id: int, rule_id: int) -> Answer:
        with self._lock:
            vm = self._vms.get(vm_id)
            rules = vm["security_rules"] if vm else []
            kept = [rule for rule in rules if rule["id"] != rule_id]
            if vm is None or len(kept) == len(rules):
                return 404, _error(f"Security rule {rule_id} of virtual machine {vm_id} not found", "not_found")
            vm["security_rules"] = kept
        return 200, {"status": True, "message": "Security rule deleted"}

    # State.

    def _new_vm(self, body: dict[str, Any]) -> dict[str, Any]:
        marker = parse_replica_marker(body.get("user_data"))
        fate = "ERROR" if self.vm_goes_to_error else None if self.never_active else "ACTIVE"
        with self._lock:
            vm_id, self._next_vm_id = self._next_vm_id, self._next_vm_id + 1
            vm = {
                "id": vm_id, "name": body["name"], "status": "CREATING", "labels": list(body.get("labels") or []),
                "floating_ip": None, "fixed_ip": None, "user_data": body.get("user_data"),
                "security_rules": [self._new_rule(rule) for rule in body.get("security_rules") or []],
                "port": marker[0] if marker else None, "model": marker[1] if marker else None,
                "environment_name": body["environment_name"], "flavor_name": body["flavor_name"],
                "image_name": body.get("image_name"), "key_name": body["key_name"],
                "assign_floating_ip": bool(body.get("assign_floating_ip")),
                "enable_port_randomization": body.get("enable_port_randomization", True),
                "created_at": datetime.now(UTC).isoformat(), "request": copy.deepcopy(body),
                "_due": time.monotonic() + self.active_after_seconds, "_fate": fate, "_activating": False,
            }
            self._vms[vm_id] = vm
            return _instance(vm)

    def _new_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        rule_id, self._next_rule_id = self._next_rule_id, self._next_rule_id + 1
        fields = {key: rule.get(key) for key in (*_RULE_FIELDS, "port_range_min", "port_range_max")}
        return {"id": rule_id, **fields, "status": "SUCCESS", "created_at": datetime.now(UTC).isoformat()}

    def _advance(self) -> None:
        """Move due VMs on; a VM turns ACTIVE only after on_active returned, so a poller never sees it early."""
        now = time.monotonic()
        with self._lock:
            due = [vm for vm in self._vms.values()
                   if vm["status"] == "CREATING" and vm["_fate"] and not vm["_activating"] and now >= vm["_due"]]
            for vm in due:
                if vm["_fate"] == "ERROR":
                    vm["status"] = "ERROR"
                else:
                    vm["_activating"] = True  # claimed: on_active runs once, in this thread
            ready = [{**_public(vm), "status": "ACTIVE", "floating_ip": self._floating_ip(vm),
                      "fixed_ip": _fixed_ip(vm["id"])} for vm in due if vm["_fate"] == "ACTIVE"]
        for snapshot in ready:
            self._notify(self.on_active, snapshot)
            with self._lock:
                vm = self._vms.get(snapshot["id"])
                if vm is not None:
                    vm.update(status="ACTIVE", floating_ip=snapshot["floating_ip"], fixed_ip=snapshot["fixed_ip"],
                              _activating=False)
            if vm is None:  # deleted while on_active ran: undo what it started
                self._notify(self.on_deleted, snapshot)

    def _floating_ip(self, vm: dict[str, Any]) -> str | None:
        return self.floating_ip if vm["assign_floating_ip"] else None

    @staticmethod
    def _notify(callback: VmCallback | None, vm: dict[str, Any]) -> None:
        if callback is None:
            return
        try:
            callback(vm)
        except Exception:  # the test's or local stack's bug: show it, but keep answering like Hyperstack would
            traceback.print_exc()


def _create_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    missing = [field for field in _CREATE_FIELDS if body.get(field) in (None, "")]
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
    missing = [field for field in _RULE_FIELDS if not rule.get(field)]
    return f"Security rule missing: {', '.join(missing)}" if missing else None


def _public(vm: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({key: value for key, value in vm.items() if not key.startswith("_")})


def _fixed_ip(vm_id: int) -> str:
    return f"10.0.{vm_id // 250 % 250}.{vm_id % 250 + 2}"


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
        if self.headers.get("api_key") != fake.api_key:
            self._send(401, _error("Invalid or missing api_key", "unauthorized"))
        elif fake.take("rate_limit_next"):
            self._send(429, _error("Too many requests", "rate_limited"), {"Retry-After": "1"})
        elif fake.take("stall_next"):
            self.server.stopping.wait(fake.stall_seconds)
            self.close_connection = True  # never answered: the client's timeout is what ends it
        elif fake.take("status_false_next"):
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


class ServedVms:
    """`on_active`/`on_deleted` callbacks that give each ACTIVE VM a replica on the port its
    user_data names (whatever `serve(vm)` starts: a mock replica, a forwarder), stopped with the VM."""

    def __init__(self, serve: Callable[[dict[str, Any]], Any]) -> None:
        self._serve = serve
        self._replicas: dict[int, Any] = {}

    def on_active(self, vm: dict[str, Any]) -> None:
        if vm.get("port"):
            self._replicas[vm["id"]] = self._serve(vm)

    def on_deleted(self, vm: dict[str, Any]) -> None:
        replica = self._replicas.pop(vm["id"], None)
        if replica is not None:
            replica.stop()

    def stop_all(self) -> None:
        for replica in list(self._replicas.values()):
            replica.stop()


def mock_replica_for(vm: dict[str, Any]) -> Any:
    from infra.local.mock_vllm import MockVllm

    return MockVllm(model=vm["model"], port=vm["port"], pace_seconds=0.02).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Hyperstack API (VMs and their firewall rules).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--api-key", default="fake-key")
    parser.add_argument("--active-after", type=float, default=1.0, help="seconds from CREATING to ACTIVE")
    parser.add_argument("--floating-ip", default="127.0.0.1")
    parser.add_argument("--mock-replicas", action="store_true",
                        help="run a mock vLLM replica for each ACTIVE VM whose user_data names a port and model")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    options = parser.parse_args(argv)
    served = ServedVms(mock_replica_for) if options.mock_replicas else None
    fake = FakeHyperstack(options.api_key, options.host, options.port, options.active_after, options.floating_ip,
                          served.on_active if served else None, served.on_deleted if served else None,
                          verbose=not options.quiet)
    try:
        serve_until_signalled(fake, f"fake Hyperstack at {{url}} (api_key {options.api_key!r})")
    finally:
        if served:
            served.stop_all()


if __name__ == "__main__":
    main()
