"""Provisioning on one machine: the real workflow under the embedded emulator's Step Functions,
its task code in this process, and (without a HYPERSTACK_API_KEY) a fake Hyperstack whose
ACTIVE VMs are served by mock vLLM replicas on the ports they were asked for, or, given a real local
replica (`make run LOCAL_REPLICA=smollm2`), by that replica; behind each VM's TLS front when its user_data
carries one (infra/local/vm_front.py), as a booted VM would be."""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

# Seconds, not the production minutes: a newcomer watches a replica reach SUCCESS.
# The reconciler's grace stays longer than a local create call (well under a second against the fake).
LOCAL_DEFAULTS = {"PROVISION_POLL_SECONDS": "1", "PROVISION_TIMEOUT_SECONDS": "120",
                  "MODEL_READY_TIMEOUT_SECONDS": "300", "RECONCILE_INTERVAL_SECONDS": "5",
                  "RECONCILE_GRACE_SECONDS": "10", "IDLE_CHECK_SECONDS": "1",
                  "TEARDOWN_RETRY_SECONDS": "10", "TEARDOWN_STALL_SECONDS": "300",
                  "SCALE_CHECK_SECONDS": "5", "SCALE_FUNCTION_NAME": "hyperstack-llm-proxy-local-scale"}


def start_local_provisioning(emulator_url: str, real_replica: tuple[str, int] | None = None) -> list[str]:
    """Wire provisioning into the local stack; returns what to tell the developer.

    `real_replica` (host, port): a running server that every fake VM answers with instead of a mock.
    """
    from chalicelib.core.settings import get_chat_settings, get_provision_settings, get_settings
    from chalicelib.provisioning.tasks import handle
    from infra.local.workflows import setup_local_workflows

    lines = []
    for name, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not os.environ.get("HYPERSTACK_API_KEY"):
        fake = _start_fake_hyperstack(real_replica)
        os.environ["HYPERSTACK_API_URL"], os.environ["HYPERSTACK_API_KEY"] = fake.url, fake.api_key
        lines.append(f"Fake Hyperstack: {fake.url} (set HYPERSTACK_API_KEY to use the real one)")
        if real_replica:
            lines.append("Fake VMs are served by the local llama.cpp replica (whatever model they name)")
    else:
        lines.append(f"Hyperstack: {os.environ.get('HYPERSTACK_API_URL') or 'the SDK default host'} (real VMs!)")
    os.environ.update(setup_local_workflows(emulator_url, handle))
    # The settings may have been read already (modules read them on import): read them again with the ARNs.
    get_settings.cache_clear()
    get_chat_settings.cache_clear()
    get_provision_settings.cache_clear()
    lines.append("Workflows: infra/{provisioning,hibernate,wake}.asl.json under the embedded Step Functions")
    lines.append(_start_reconciler())
    lines.append(_start_idle_check())
    lines.append(_start_scaler())
    return lines


def _start_reconciler() -> str:
    """The scheduled reconcile function, as EventBridge would run it: every RECONCILE_INTERVAL_SECONDS."""
    from chalicelib.core.settings import get_provision_settings
    from chalicelib.provisioning import reconciler
    from chalicelib.store.deployment import deployment_id

    settings = get_provision_settings()
    deployment = deployment_id()  # made now: fresh tables, a fresh id for this run
    _every(settings.reconcile_interval_seconds, reconciler.run, "reconciler")
    return (f"Reconciler: deployment {deployment}, every {settings.reconcile_interval_seconds} s "
            f"(VMs of no replica go after {settings.reconcile_grace_seconds} s)")


def _start_idle_check() -> str:
    """The scheduled idle check, as EventBridge would run it: every IDLE_CHECK_SECONDS."""
    from chalicelib.core.settings import get_provision_settings
    from chalicelib.provisioning import idle_check

    interval = get_provision_settings().idle_check_seconds
    _every(interval, idle_check.run, "idle-check")
    return f"Idle check: every {interval} s (replicas with hibernate_after_seconds hibernate when idle)"


def _start_scaler() -> str:
    """The scheduled scaler, as EventBridge would run it: every SCALE_CHECK_SECONDS."""
    from chalicelib.admin import scaler
    from chalicelib.core.settings import get_provision_settings
    from infra.local.emulator import register_function

    interval = get_provision_settings().scale_check_seconds
    _every(interval, scaler.run, "scaler")
    # A nudge (chalicelib/chat/nudge.py) invokes it as Lambda would: the embedded emulator answers the Invoke.
    register_function(os.environ["SCALE_FUNCTION_NAME"], scaler.handle)
    return f"Scaler: every {interval} s, and when nudged (models with autoscaling grow and shrink with their load)"


def _every(seconds: float, action: Any, name: str) -> None:
    def forever() -> None:
        while True:
            time.sleep(seconds)
            try:
                action()
            except Exception:  # noqa: BLE001 - a failed run is shown; the next one runs anyway
                traceback.print_exc()

    threading.Thread(target=forever, name=name, daemon=True).start()


def _start_fake_hyperstack(real_replica: tuple[str, int] | None) -> Any:
    from infra.local.fake_hyperstack import FakeHyperstack
    from infra.local.forwarder import TcpForwarder
    from infra.local.ports import side_port
    from infra.local.served_vms import ServedVm, ServedVms, host_of, loopback_for, mock_replica_for
    from infra.local.vm_front import front_for

    def real_replica_for(vm: dict[str, Any]) -> ServedVm:
        # One model loaded once: llama.cpp ignores the request's model name, the proxy checks it. The VM's
        # TLS front relays to it; a VM without one answers plain, through a forwarder.
        front = front_for(vm, real_replica)
        return ServedVm(front=front) if front else ServedVm(
            TcpForwarder(real_replica, port=vm["port"], host=host_of(vm)).start())

    served = ServedVms(real_replica_for if real_replica else mock_replica_for)
    return FakeHyperstack(port=side_port("FAKE_HYPERSTACK_PORT"), floating_ip=loopback_for, on_active=served.on_active,
                          on_deleted=served.on_deleted, on_hibernated=served.on_hibernated).start()
