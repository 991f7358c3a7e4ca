"""HyperstackClient: the real Hyperstack SDK, through the wrapper, against the fake Hyperstack on loopback."""

import time
from collections.abc import Iterator

import pytest

from chalicelib.core.vm_naming import (
    VM_NAME_MAX_LENGTH,
    parse_replica_marker,
    replica_id_of,
    replica_marker,
    replica_vm_name,
)
from chalicelib.hyperstack import client as client_module
from chalicelib.hyperstack.client import HibernationUnsupported, HyperstackClient, HyperstackError, VmSpec
from infra.local.fake_hyperstack import FakeHyperstack

NAME = "llm-proxy-replica-r1"
VLLM_RULE = {"direction": "ingress", "protocol": "tcp", "ethertype": "IPv4", "remote_ip_prefix": "0.0.0.0/0",
             "port_range_min": 8000, "port_range_max": 8000}
SSH_RULE = {**VLLM_RULE, "remote_ip_prefix": "203.0.113.7/32", "port_range_min": 22, "port_range_max": 22}


def spec(name: str = NAME, **fields) -> VmSpec:
    values = dict(name=name, environment_name="default-CANADA-1", image_name="Ubuntu Server 22.04 LTS",
                  flavor_name="n3-A100x1", key_name="deploy-key", assign_floating_ip=True,
                  user_data=f"#!/bin/bash\n{replica_marker(8000, 'meta-llama/Llama-3.1-8B-Instruct')}\n",
                  labels=[name], security_rules=[VLLM_RULE])
    return VmSpec(**{**values, **fields})


def wait_for_status(client: HyperstackClient, vm_id: int, status: str, timeout: float = 5):
    deadline = time.monotonic() + timeout
    while (vm := client.get_vm(vm_id)) is not None and vm.status != status and time.monotonic() < deadline:
        time.sleep(0.02)
    return vm


@pytest.fixture
def fake() -> Iterator[FakeHyperstack]:
    with FakeHyperstack(active_after_seconds=0.2) as running:
        yield running


class RuleClient(HyperstackClient):
    """The client plus firewall-rule calls on a running VM. Production never makes them (a VM's rules come
    with its create), so they live here, where they drive the fake's sg-rules routes through the real SDK."""

    def add_security_rule(self, vm_id: int, rule: dict) -> int:
        payload = self._rule_payload(rule)
        result = self._call(f"add firewall rule to VM {vm_id}", self._vms.create_firewall_rule_for_vm,
                            int(vm_id), payload)
        if result.security_rule is None or result.security_rule.id is None:
            raise HyperstackError(f"add firewall rule to VM {vm_id}: the answer holds no rule id", retryable=False)
        return result.security_rule.id

    def delete_security_rule(self, vm_id: int, rule_id: int) -> None:
        try:
            self._call(f"delete firewall rule {rule_id} of VM {vm_id}", self._vms.delete_firewall_rule_for_vm,
                       int(vm_id), int(rule_id))
        except HyperstackError as error:
            if error.status != 404:
                raise


@pytest.fixture
def client(fake: FakeHyperstack) -> Iterator[RuleClient]:
    with RuleClient(fake.api_key, host=fake.url, timeout_seconds=2) as hyperstack:
        yield hyperstack


# Lifecycle

def test_created_vm_starts_creating_without_a_floating_ip(client):
    vm = client.create_vm(spec())

    assert (vm.name, vm.status, vm.floating_ip) == (NAME, "CREATING", None)


def test_created_vm_becomes_active_with_the_floating_ip(client, fake):
    created = client.create_vm(spec())

    vm = wait_for_status(client, created.id, "ACTIVE")

    assert vm.status == "ACTIVE"
    assert vm.floating_ip == fake.floating_ip
    assert vm.fixed_ip


def test_create_sends_port_randomization_off_labels_and_rules_as_given(client, fake):
    created = client.create_vm(spec(security_rules=[VLLM_RULE, SSH_RULE]))

    sent = fake.vms[created.id]["request"]
    assert sent["enable_port_randomization"] is False
    assert sent["count"] == 1
    assert sent["labels"] == [NAME]
    assert sent["security_rules"] == [VLLM_RULE, SSH_RULE]
    assert sent["user_data"] == spec().user_data


def test_get_vm_of_a_deleted_vm_is_none(client):
    vm = client.create_vm(spec())

    client.delete_vm(vm.id)

    assert client.get_vm(vm.id) is None


def test_deleting_an_unknown_vm_is_not_an_error(client):
    client.delete_vm(424242)


# Finding by name

def test_find_vm_by_name_finds_exactly_the_named_vm(client):
    client.create_vm(spec(f"{NAME}0"))  # contains NAME: Hyperstack's search matches it too
    wanted = client.create_vm(spec(NAME))

    found = client.find_vm_by_name(NAME)

    assert found is not None
    assert (found.id, found.name) == (wanted.id, NAME)


def test_find_vm_by_name_is_none_when_no_vm_has_the_name(client):
    client.create_vm(spec(f"{NAME}0"))

    assert client.find_vm_by_name(NAME) is None


def test_find_vm_by_name_reads_every_page(client, fake, monkeypatch):
    monkeypatch.setattr(client_module, "_PAGE_SIZE", 2)
    for index in range(5):
        client.create_vm(spec(f"{NAME}{index}"))
    last = client.create_vm(spec(NAME))

    found = client.find_vm_by_name(NAME)

    assert found is not None and found.id == last.id
    pages = [request["query"]["page"] for request in fake.request_log if request["method"] == "GET"]
    assert pages == [["1"], ["2"], ["3"]]


def test_find_vm_by_name_with_duplicates_returns_the_oldest_and_lists_them_all(client):
    first = client.create_vm(spec())
    second = client.create_vm(spec())

    assert client.find_vm_by_name(NAME).id == first.id
    assert [vm.id for vm in client.find_vms_by_name(NAME)] == [first.id, second.id]


def test_find_vms_by_prefix_lists_only_names_that_start_with_it_with_their_creation_time(client):
    ours = [client.create_vm(spec(f"{NAME}{index}")) for index in range(2)]
    client.create_vm(spec(f"x-{NAME}1"))  # contains the prefix, does not start with it

    found = client.find_vms_by_prefix(NAME)

    assert [vm.id for vm in found] == [vm.id for vm in ours]
    assert all(vm.created_at is not None and vm.created_at.tzinfo is not None for vm in found)


def test_a_create_answered_500_after_creating_leaves_a_vm_found_by_name(client, fake):
    fake.fail_next_creates_after_creating = 1

    with pytest.raises(HyperstackError) as failure:
        client.create_vm(spec())

    assert failure.value.retryable
    assert client.find_vm_by_name(NAME) is not None


# Firewall rules

def test_a_security_rule_can_be_added_then_deleted(client, fake):
    vm = client.create_vm(spec(security_rules=[]))

    rule_id = client.add_security_rule(vm.id, SSH_RULE)
    added = fake.vms[vm.id]["security_rules"]
    client.delete_security_rule(vm.id, rule_id)

    assert [(rule["id"], rule["port_range_min"], rule["remote_ip_prefix"]) for rule in added] == [
        (rule_id, 22, "203.0.113.7/32")]
    assert fake.vms[vm.id]["security_rules"] == []


def test_deleting_a_gone_security_rule_is_not_an_error(client):
    vm = client.create_vm(spec(security_rules=[]))
    rule_id = client.add_security_rule(vm.id, SSH_RULE)
    client.delete_security_rule(vm.id, rule_id)

    client.delete_security_rule(vm.id, rule_id)


def test_an_invalid_rule_is_refused_before_anything_is_sent(client, fake):
    with pytest.raises(HyperstackError) as failure:
        client.add_security_rule(1001, {**SSH_RULE, "protocol": "telnet"})

    assert not failure.value.retryable
    assert fake.request_log == []


def test_a_rule_with_an_unknown_key_is_refused(client):
    with pytest.raises(HyperstackError, match="port"):
        client.add_security_rule(1001, {**SSH_RULE, "port": 22})


# Errors: retryable or not

def test_a_wrong_api_key_is_not_retryable(fake):
    with HyperstackClient("wrong-key", host=fake.url, timeout_seconds=2) as wrong:
        with pytest.raises(HyperstackError) as failure:
            wrong.find_vm_by_name(NAME)

    assert (failure.value.status, failure.value.retryable) == (401, False)
    assert "API key" in str(failure.value)


def test_a_server_error_is_retryable_and_carries_hyperstacks_message(client, fake):
    fake.fail_next_creates = 1

    with pytest.raises(HyperstackError) as failure:
        client.create_vm(spec())

    assert (failure.value.status, failure.value.retryable) == (500, True)
    assert "fail_next_creates" in str(failure.value)
    assert fake.live_vm_names() == []


def test_a_rate_limit_is_retryable_at_once_without_waiting_for_retry_after(client, fake):
    fake.rate_limit_next = 1
    started = time.monotonic()

    with pytest.raises(HyperstackError) as failure:
        client.get_vm(1001)

    assert (failure.value.status, failure.value.retryable) == (429, True)
    assert time.monotonic() - started < 0.5


def test_a_failed_delete_is_retryable_and_the_vm_stays(client, fake):
    vm = client.create_vm(spec())
    fake.fail_deletes = 1

    with pytest.raises(HyperstackError) as failure:
        client.delete_vm(vm.id)

    assert failure.value.retryable
    assert client.get_vm(vm.id) is not None


def test_an_unreachable_api_is_retryable(fake):
    fake.stop()  # its port now refuses connections
    with HyperstackClient(fake.api_key, host=fake.url, timeout_seconds=2) as unreachable:
        with pytest.raises(HyperstackError) as failure:
            unreachable.get_vm(1001)

    assert failure.value.retryable
    assert failure.value.status is None


def test_an_answer_that_never_comes_times_out_as_retryable(fake):
    fake.stall_next = 1
    with HyperstackClient(fake.api_key, host=fake.url, timeout_seconds=0.3) as impatient:
        started = time.monotonic()
        with pytest.raises(HyperstackError) as failure:
            impatient.get_vm(1001)

    assert failure.value.retryable
    assert "0.3 s" in str(failure.value)
    assert time.monotonic() - started < 2


def test_status_false_in_a_200_is_not_retryable(client, fake):
    fake.status_false_next = 1

    with pytest.raises(HyperstackError) as failure:
        client.create_vm(spec())

    assert not failure.value.retryable
    assert "status false" in str(failure.value)


def test_status_false_for_deletes_is_left_for_a_delete_by_every_other_call(client, fake):
    vm = client.create_vm(spec())
    fake.status_false_next_deletes = 1

    assert client.find_vms_by_name(vm.name) and client.get_vm(vm.id) is not None
    with pytest.raises(HyperstackError) as failure:
        client.delete_vm(vm.id)

    assert "status false" in str(failure.value)
    assert client.get_vm(vm.id) is not None and fake.status_false_next_deletes == 0


def test_a_too_long_vm_name_is_refused_before_anything_is_sent(client, fake):
    with pytest.raises(HyperstackError) as failure:
        client.create_vm(spec("x" * 51))

    assert not failure.value.retryable
    assert fake.request_log == []


# Hibernation

def active_vm(client: HyperstackClient) -> int:
    vm = client.create_vm(spec())
    assert wait_for_status(client, vm.id, "ACTIVE").status == "ACTIVE"
    return vm.id


def hibernated_vm(client: HyperstackClient, retain_ip: bool = True) -> int:
    vm_id = active_vm(client)
    client.hibernate_vm(vm_id, retain_ip=retain_ip)
    assert wait_for_status(client, vm_id, "HIBERNATED").status == "HIBERNATED"
    return vm_id


def test_hibernate_vm_takes_an_active_vm_to_hibernated_keeping_its_floating_ip(client, fake):
    vm_id = active_vm(client)

    client.hibernate_vm(vm_id)
    hibernating = client.get_vm(vm_id)
    hibernated = wait_for_status(client, vm_id, "HIBERNATED")

    assert hibernating.status == "HIBERNATING"
    assert (hibernated.status, hibernated.floating_ip) == ("HIBERNATED", fake.floating_ip)
    assert [entry["query"] for entry in fake.request_log if entry["path"].endswith("/hibernate")] == [
        {"retain_ip": ["true"]}]


def test_hibernate_vm_without_retain_ip_lets_the_floating_ip_go(client, fake):
    vm_id = hibernated_vm(client, retain_ip=False)

    assert client.get_vm(vm_id).floating_ip is None
    assert [entry["query"] for entry in fake.request_log if entry["path"].endswith("/hibernate")] == [
        {"retain_ip": ["false"]}]


def test_restore_vm_brings_a_hibernated_vm_back_to_active_with_a_floating_ip(client, fake):
    vm_id = hibernated_vm(client, retain_ip=False)

    client.restore_vm(vm_id)
    restoring = client.get_vm(vm_id)
    restored = wait_for_status(client, vm_id, "ACTIVE")

    assert restoring.status == "RESTORING"
    assert (restored.status, restored.floating_ip) == ("ACTIVE", fake.floating_ip)
    assert fake.restore_calls == [vm_id]


@pytest.mark.parametrize("settled", [False, True], ids=["hibernating", "hibernated"])
def test_hibernating_a_vm_already_hibernating_or_hibernated_is_success(client, fake, settled):
    vm_id = active_vm(client)
    client.hibernate_vm(vm_id)
    if settled:
        wait_for_status(client, vm_id, "HIBERNATED")

    client.hibernate_vm(vm_id)  # Hyperstack refuses it (400): the wrapper reads the VM back

    assert fake.hibernate_calls == [vm_id, vm_id]
    assert wait_for_status(client, vm_id, "HIBERNATED").status == "HIBERNATED"


@pytest.mark.parametrize("settled", [False, True], ids=["restoring", "active"])
def test_restoring_a_vm_already_restoring_or_active_is_success(client, fake, settled):
    vm_id = hibernated_vm(client)
    client.restore_vm(vm_id)
    if settled:
        wait_for_status(client, vm_id, "ACTIVE")

    client.restore_vm(vm_id)

    assert fake.restore_calls == [vm_id, vm_id]
    assert wait_for_status(client, vm_id, "ACTIVE").status == "ACTIVE"


def test_a_flavor_that_cannot_hibernate_is_hibernation_unsupported_and_not_retryable(client, fake):
    fake.flavors_without_hibernation = {spec().flavor_name}
    vm_id = active_vm(client)

    with pytest.raises(HibernationUnsupported) as failure:
        client.hibernate_vm(vm_id)

    assert isinstance(failure.value, HyperstackError)
    assert (failure.value.status, failure.value.retryable) == (400, False)
    assert "n3-A100x1" in str(failure.value)  # Hyperstack's own words come along
    assert client.get_vm(vm_id).status == "ACTIVE"


def test_hibernating_a_vm_still_being_created_is_retryable_and_not_unsupported(client, fake):
    fake.never_active = True
    vm = client.create_vm(spec())

    with pytest.raises(HyperstackError) as failure:
        client.hibernate_vm(vm.id)

    assert not isinstance(failure.value, HibernationUnsupported)
    assert (failure.value.status, failure.value.retryable) == (400, True)
    assert "CREATING" in str(failure.value)


def test_restoring_a_vm_still_hibernating_is_retryable(client, fake):
    vm_id = active_vm(client)
    fake.hibernate_after_seconds = 5
    client.hibernate_vm(vm_id)

    with pytest.raises(HyperstackError) as failure:
        client.restore_vm(vm_id)

    assert (failure.value.status, failure.value.retryable) == (400, True)
    assert "HIBERNATING" in str(failure.value)


def test_restoring_a_vm_in_error_is_not_retryable(client, fake):
    fake.vm_goes_to_error = True
    vm = client.create_vm(spec())
    wait_for_status(client, vm.id, "ERROR")

    with pytest.raises(HyperstackError) as failure:
        client.restore_vm(vm.id)

    assert (failure.value.status, failure.value.retryable) == (400, False)


@pytest.mark.parametrize("call", ["hibernate_vm", "restore_vm"])
def test_hibernating_or_restoring_an_unknown_vm_is_a_404_not_retryable(client, call):
    with pytest.raises(HyperstackError) as failure:
        getattr(client, call)(424242)

    assert (failure.value.status, failure.value.retryable) == (404, False)


def test_a_failed_hibernate_is_retryable_and_the_vm_stays_active(client, fake):
    vm_id = active_vm(client)
    fake.fail_next_hibernates = 1

    with pytest.raises(HyperstackError) as failure:
        client.hibernate_vm(vm_id)

    assert (failure.value.status, failure.value.retryable) == (500, True)
    assert client.get_vm(vm_id).status == "ACTIVE"


def test_a_failed_restore_is_retryable_and_the_vm_stays_hibernated(client, fake):
    vm_id = hibernated_vm(client)
    fake.fail_next_restores = 1

    with pytest.raises(HyperstackError) as failure:
        client.restore_vm(vm_id)

    assert (failure.value.status, failure.value.retryable) == (500, True)
    assert client.get_vm(vm_id).status == "HIBERNATED"


def test_a_refusal_whose_vm_cannot_be_read_back_is_as_retryable_as_the_read(client, monkeypatch):
    vm_id = hibernated_vm(client)

    def unreadable(_vm_id: int) -> None:
        raise HyperstackError("Hyperstack get VM: HTTP 503", retryable=True, status=503)

    monkeypatch.setattr(client, "get_vm", unreadable)

    with pytest.raises(HyperstackError) as failure:
        client.hibernate_vm(vm_id)

    assert (failure.value.status, failure.value.retryable) == (400, True)
    assert "503" in str(failure.value)


# Names and the user_data marker

def test_replica_vm_name_is_deterministic_and_carries_the_deployment():
    assert replica_vm_name("prod-1a2b3c4d", 42) == "llm-proxy-prod-1a2b3c4d-r42"


def test_replica_vm_name_longer_than_hyperstack_allows_is_refused():
    with pytest.raises(ValueError):
        replica_vm_name("prod-1a2b3c4d", "1" * 30)


def test_a_long_replica_id_still_fits_hyperstacks_name_limit():
    assert len(replica_vm_name("staging-1a2b3c4d", 10**12)) <= VM_NAME_MAX_LENGTH


def test_a_malformed_deployment_id_is_refused():
    with pytest.raises(ValueError):
        replica_vm_name("prod", 1)


@pytest.mark.parametrize("replica_id", [1, 42, 987654321])
def test_replica_id_of_reads_back_the_name_it_was_made_from(replica_id):
    assert replica_id_of(replica_vm_name("dev-0badcafe", replica_id), "dev-0badcafe") == replica_id


@pytest.mark.parametrize("name", [
    "llm-proxy-dev-0badcaff-r1",  # another deployment of the same stage
    "llm-proxy-prod-0badcafe-r1",  # another stage
    "llm-proxy-replica-1",  # the names before deployment ids
    "llm-proxy-dev-0badcafe-r", "llm-proxy-dev-0badcafe-r01", "llm-proxy-dev-0badcafe-r1x",
    "llm-proxy-dev-0badcafe-r²", "my-own-vm",
])
def test_names_of_other_deployments_or_owners_belong_to_no_replica(name):
    assert replica_id_of(name, "dev-0badcafe") is None


def test_replica_marker_round_trips_a_model_name_with_slashes():
    user_data = f"#!/bin/bash\nset -e\n{replica_marker(8123, 'org/sub/Model-7B')}\nvllm serve ...\n"

    assert parse_replica_marker(user_data) == (8123, "org/sub/Model-7B")


def test_user_data_without_a_marker_parses_to_none():
    assert parse_replica_marker("#!/bin/bash\necho hi\n") is None
    assert parse_replica_marker(None) is None
