"""Replicas: /v1/models/{id}/replicas, /v1/models/replicas/{id}, /v1/replicas/{id}."""

import pytest

from chalicelib.core.settings import get_settings
from tests.unit.conftest import VM_DETAILS, started_executions

MISSING = ["Missing data for required field."]
VM_FIELDS = ["name", "environment_name", "image_name", "flavor_name", "key_name", "port", "run_command"]


def table(api, name):
    reply = api.get(f"/v1/tables/{name}")
    assert reply.status == 200, reply.json
    return reply.json["data"]


def replicas_of(api, model_id):
    reply = api.get(f"/v1/models/{model_id}/replicas")
    assert reply.status == 200, reply.json
    return reply.json


def only_replica(api, model_id):
    (replica,) = replicas_of(api, model_id)
    return replica


def vm_replica(api, model_id, **details):
    body = {"endpoint": "", "create_vm": True, "vm_creation_details": {**VM_DETAILS, **details}}
    reply = api.post(f"/v1/models/{model_id}/replicas", body)
    assert reply.status == 201, reply.json
    return reply.json["replica_id"]


def rules_of(api, replica_id):
    return [rule for rule in table(api, "replica_security_rules") if rule["replica_id"] == replica_id]



@pytest.fixture
def ingress_cidr(monkeypatch):
    """Settings re-read from the environment for one test, as a fresh process would."""

    def configure(value):
        if value is None:
            monkeypatch.delenv("REPLICA_INGRESS_CIDR", raising=False)
        else:
            monkeypatch.setenv("REPLICA_INGRESS_CIDR", value)
        get_settings.cache_clear()

    yield configure
    get_settings.cache_clear()


# GET /v1/models/{model_id}/replicas


def test_model_without_replicas_lists_none(api, model_id):
    reply = api.get(f"/v1/models/{model_id}/replicas")

    assert reply.status == 200
    assert reply.json == []


def test_replica_is_listed_with_its_fields(api, model_id):
    replica_id = api.create_replica(model_id, "http://10.0.0.1:8000/v1", rate_limit=20)

    replica = only_replica(api, model_id)

    assert replica["id"] == replica_id
    assert replica["model_id"] == model_id
    assert replica["endpoint"] == "http://10.0.0.1:8000/v1"
    assert replica["rate_limit"] == 20
    assert replica["vm_status"] == "SUCCESS"
    assert "vm_id" in replica
    assert "error_message" in replica


def test_replicas_are_listed_only_under_their_own_model(api, model_id):
    other = api.create_model("other/model")
    mine = api.create_replica(model_id, "http://10.0.0.1:8000/v1")
    api.create_replica(other, "http://10.0.0.2:8000/v1")

    assert [replica["id"] for replica in replicas_of(api, model_id)] == [mine]


def test_listing_replicas_of_an_unknown_model_is_not_found(api):
    reply = api.get("/v1/models/999/replicas")

    assert reply.status == 404
    assert "error" in reply.json


# POST /v1/models/{model_id}/replicas


def test_creating_a_replica_answers_201_with_its_id(api, model_id):
    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://10.0.0.1:8000/v1"})

    assert reply.status == 201
    assert reply.json == {"replica_id": only_replica(api, model_id)["id"]}


def test_replica_given_by_endpoint_is_serving_at_once(api, model_id):
    api.create_replica(model_id, "http://10.0.0.1:8000/v1")

    assert only_replica(api, model_id)["vm_status"] == "SUCCESS"


def test_full_chat_completions_url_is_stored_as_the_base_url(api, model_id):
    api.create_replica(model_id, "http://10.0.0.1:8000/v1/chat/completions")

    assert only_replica(api, model_id)["endpoint"] == "http://10.0.0.1:8000/v1"


def test_rate_limit_may_be_sent_as_a_numeric_string(api, model_id):
    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://10.0.0.1:8000/v1", "rate_limit": "15"})

    assert reply.status == 201
    assert only_replica(api, model_id)["rate_limit"] == 15


def test_replica_without_rate_limit_has_none(api, model_id):
    api.create_replica(model_id, "http://10.0.0.1:8000/v1")

    assert only_replica(api, model_id)["rate_limit"] is None


def test_replica_without_endpoint_is_refused_naming_endpoint(api, model_id):
    reply = api.post(f"/v1/models/{model_id}/replicas", {})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"endpoint"}
    assert isinstance(reply.json["errors"]["endpoint"], list)


def test_empty_endpoint_without_create_vm_is_refused_naming_endpoint(api, model_id):
    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": ""})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"endpoint"}


def test_replica_for_an_unknown_model_is_not_found(api):
    reply = api.post("/v1/models/999/replicas", {"endpoint": "http://10.0.0.1:8000/v1"})

    assert reply.status == 404
    assert "error" in reply.json
    assert table(api, "replicas") == []


def test_same_endpoint_twice_for_a_model_is_a_conflict(api, model_id):
    api.create_replica(model_id, "http://10.0.0.1:8000/v1")

    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://10.0.0.1:8000/v1"})

    assert reply.status == 409
    assert "error" in reply.json


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://h:8000/v1", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/chat/completions", "http://h:8000/v1"),
    ],
    ids=["base-then-full", "full-then-base"],
)
def test_base_and_full_form_of_one_endpoint_conflict(api, model_id, first, second):
    api.create_replica(model_id, first)

    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": second})

    assert reply.status == 409


def test_conflicting_replica_leaves_the_store_unchanged(api, model_id):
    api.create_replica(model_id, "http://h:8000/v1")
    replicas_before = table(api, "replicas")
    rules_before = table(api, "replica_security_rules")

    api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://h:8000/v1/chat/completions", "rate_limit": 3})

    assert table(api, "replicas") == replicas_before
    assert table(api, "replica_security_rules") == rules_before


def test_same_endpoint_may_serve_two_models(api, model_id):
    other = api.create_model("other/model")
    api.create_replica(model_id, "http://10.0.0.1:8000/v1")

    reply = api.post(f"/v1/models/{other}/replicas", {"endpoint": "http://10.0.0.1:8000/v1"})

    assert reply.status == 201


def test_deleted_replicas_endpoint_can_be_added_again(api, model_id):
    replica_id = api.create_replica(model_id, "http://10.0.0.1:8000/v1")
    api.delete(f"/v1/replicas/{replica_id}")

    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://10.0.0.1:8000/v1"})

    assert reply.status == 201


# POST with create_vm


def test_provisioned_replica_is_pending(api, model_id):
    replica_id = vm_replica(api, model_id)

    replica = only_replica(api, model_id)

    assert replica["id"] == replica_id
    assert replica["vm_status"] == "PENDING"


def test_empty_endpoint_is_accepted_with_create_vm(api, model_id):
    reply = api.post(
        f"/v1/models/{model_id}/replicas",
        {"endpoint": "", "create_vm": True, "vm_creation_details": VM_DETAILS},
    )

    assert reply.status == 201


def test_provisioned_replica_shows_its_vm_details(api, model_id):
    vm_replica(api, model_id)

    replica = only_replica(api, model_id)

    assert {field: replica[field] for field in VM_FIELDS} == VM_DETAILS


def test_assign_floating_ip_defaults_to_true(api, model_id):
    vm_replica(api, model_id)

    assert only_replica(api, model_id)["assign_floating_ip"] is True


def test_assign_floating_ip_can_be_turned_off(api, model_id):
    vm_replica(api, model_id, assign_floating_ip=False)

    assert only_replica(api, model_id)["assign_floating_ip"] is False


def test_port_may_be_sent_as_a_numeric_string(api, model_id):
    vm_replica(api, model_id, port="8080")

    assert only_replica(api, model_id)["port"] == 8080


def test_security_rules_of_a_provisioned_replica_are_stored(api, model_id):
    rules = [
        {"direction": "ingress", "protocol": "tcp", "ethertype": "IPv4", "remote_ip_prefix": "10.1.0.0/16",
         "port_range_min": 8000, "port_range_max": 8000},
        {"direction": "ingress", "protocol": "udp", "ethertype": "IPv6", "remote_ip_prefix": "fd00::/8",
         "port_range_min": 9000, "port_range_max": 9100},
    ]

    replica_id = vm_replica(api, model_id, security_rules=rules)

    stored = sorted(rules_of(api, replica_id), key=lambda rule: rule["port_range_min"])
    fields = ["direction", "protocol", "ethertype", "remote_ip_prefix", "port_range_min", "port_range_max"]
    assert [{field: rule[field] for field in fields} for rule in stored] == rules


def test_security_rule_with_only_ports_gets_the_defaults(api, model_id, ingress_cidr):
    ingress_cidr("10.20.0.0/16")

    replica_id = vm_replica(api, model_id, security_rules=[{"port_range_min": 8000, "port_range_max": 8001}])

    (rule,) = rules_of(api, replica_id)
    assert rule["direction"] == "ingress"
    assert rule["protocol"] == "tcp"
    assert rule["ethertype"] == "IPv4"
    assert rule["remote_ip_prefix"] == "10.20.0.0/16"
    assert (rule["port_range_min"], rule["port_range_max"]) == (8000, 8001)


def test_security_rule_ports_may_be_numeric_strings(api, model_id):
    replica_id = vm_replica(api, model_id, security_rules=[{"port_range_min": "22", "port_range_max": "23"}])

    (rule,) = rules_of(api, replica_id)
    assert (rule["port_range_min"], rule["port_range_max"]) == (22, 23)


def test_default_ingress_is_open_as_the_replica_port_demands_tls_and_its_bearer(api, model_id, ingress_cidr):
    ingress_cidr(None)

    replica_id = vm_replica(api, model_id, security_rules=[{"port_range_min": 8000, "port_range_max": 8000}])

    (rule,) = rules_of(api, replica_id)
    assert rule["remote_ip_prefix"] == "0.0.0.0/0"


@pytest.mark.parametrize(("low", "high"), [(0, 65535), (443, 443)])
def test_security_rule_ports_from_0_to_65535_are_accepted(api, model_id, low, high):
    reply = api.post(
        f"/v1/models/{model_id}/replicas",
        {"create_vm": True, "vm_creation_details": {
            **VM_DETAILS, "security_rules": [{"port_range_min": low, "port_range_max": high}],
        }},
    )

    assert reply.status == 201


@pytest.mark.parametrize(
    ("low", "high"),
    [(-1, 10), (10, 65536), (9000, 8000), ("x", 10)],
    ids=["below-zero", "above-65535", "min-above-max", "not-a-number"],
)
def test_bad_security_rule_ports_are_refused_and_store_nothing(api, model_id, low, high):
    reply = api.post(
        f"/v1/models/{model_id}/replicas",
        {"create_vm": True, "vm_creation_details": {
            **VM_DETAILS, "security_rules": [{"port_range_min": low, "port_range_max": high}],
        }},
    )

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"vm_creation_details"}
    assert table(api, "replicas") == []
    assert table(api, "replica_security_rules") == []


def test_create_vm_without_details_is_refused_naming_them(api, model_id):
    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "", "create_vm": True})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"vm_creation_details"}


def test_create_vm_without_details_stores_nothing(api, model_id):
    api.post(f"/v1/models/{model_id}/replicas", {"create_vm": True})

    assert table(api, "replicas") == []
    assert table(api, "replica_security_rules") == []


@pytest.mark.parametrize("field", VM_FIELDS)
def test_each_missing_vm_detail_is_named(api, model_id, field):
    details = {name: value for name, value in VM_DETAILS.items() if name != field}

    reply = api.post(f"/v1/models/{model_id}/replicas", {"create_vm": True, "vm_creation_details": details})

    assert reply.status == 400
    assert reply.json == {"errors": {"vm_creation_details": {field: MISSING}}}


@pytest.mark.parametrize("name", ["Llama 3 replica-01", "a"])
def test_vm_name_of_letters_digits_spaces_and_hyphens_is_accepted(api, model_id, name):
    reply = api.post(
        f"/v1/models/{model_id}/replicas",
        {"create_vm": True, "vm_creation_details": {**VM_DETAILS, "name": name}},
    )

    assert reply.status == 201


@pytest.mark.parametrize("name", [" leading", "trailing ", "under_score", "dot.ted", ""])
def test_bad_vm_name_is_refused_naming_it(api, model_id, name):
    reply = api.post(
        f"/v1/models/{model_id}/replicas",
        {"create_vm": True, "vm_creation_details": {**VM_DETAILS, "name": name}},
    )

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"vm_creation_details"}
    assert set(reply.json["errors"]["vm_creation_details"]) == {"name"}


def test_refused_provisioning_stores_nothing(api, model_id):
    api.post(
        f"/v1/models/{model_id}/replicas",
        {"create_vm": True, "vm_creation_details": {**VM_DETAILS, "name": " bad", "security_rules": [
            {"port_range_min": 1, "port_range_max": 2},
        ]}},
    )

    assert table(api, "replicas") == []
    assert table(api, "replica_security_rules") == []


# PUT /v1/models/replicas/{replica_id}


def test_updating_the_rate_limit_answers_204_and_shows_it(api, model_id):
    replica_id = api.create_replica(model_id, rate_limit=10)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"rate_limit": 99})

    assert reply.status == 204
    assert only_replica(api, model_id)["rate_limit"] == 99


def test_rate_limit_update_may_be_a_numeric_string(api, model_id):
    replica_id = api.create_replica(model_id)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"rate_limit": "42"})

    assert reply.status == 204
    assert only_replica(api, model_id)["rate_limit"] == 42


def test_rate_limit_update_touches_only_that_replica(api, model_id):
    target = api.create_replica(model_id, "http://10.0.0.1:8000/v1", rate_limit=10)
    api.create_replica(model_id, "http://10.0.0.2:8000/v1", rate_limit=10)

    api.put(f"/v1/models/replicas/{target}", {"rate_limit": 50})

    limits = {replica["id"]: replica["rate_limit"] for replica in replicas_of(api, model_id)}
    assert limits[target] == 50
    assert sorted(limits.values()) == [10, 50]


def test_rate_limit_update_without_rate_limit_is_refused_naming_it(api, model_id):
    replica_id = api.create_replica(model_id, rate_limit=10)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"rate_limit"}
    assert only_replica(api, model_id)["rate_limit"] == 10


@pytest.mark.parametrize("rate_limit", [0, -3, "fast"])
def test_bad_rate_limit_update_is_refused_and_changes_nothing(api, model_id, rate_limit):
    replica_id = api.create_replica(model_id, rate_limit=10)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"rate_limit": rate_limit})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"rate_limit"}
    assert only_replica(api, model_id)["rate_limit"] == 10


def test_rate_limit_update_of_an_unknown_replica_is_not_found(api):
    reply = api.put("/v1/models/replicas/999", {"rate_limit": 5})

    assert reply.status == 404
    assert "error" in reply.json
    assert table(api, "replicas") == []


# DELETE /v1/replicas/{replica_id}


def test_deleting_a_replica_answers_204_and_removes_it(api, model_id):
    keep = api.create_replica(model_id, "http://10.0.0.1:8000/v1")
    drop = api.create_replica(model_id, "http://10.0.0.2:8000/v1")

    reply = api.delete(f"/v1/replicas/{drop}")

    assert reply.status == 204
    assert [replica["id"] for replica in replicas_of(api, model_id)] == [keep]


def test_deleting_a_provisioned_replica_hands_it_to_teardown_and_keeps_it_visible(api, model_id):
    keep = vm_replica(api, model_id, security_rules=[{"port_range_min": 1, "port_range_max": 1}])
    drop = vm_replica(api, model_id, name="second", security_rules=[
        {"port_range_min": 2, "port_range_max": 2},
        {"port_range_min": 3, "port_range_max": 3},
    ])

    reply = api.delete(f"/v1/replicas/{drop}")

    assert reply.status == 204
    assert {row["id"]: row["vm_status"] for row in replicas_of(api, model_id)} == {keep: "PENDING", drop: "DELETING"}
    assert started_executions("delete") == 1
    # Its rules stay until the teardown has deleted the VM they guard (tests/integration/test_provisioning.py).
    assert sorted(rule["replica_id"] for rule in table(api, "replica_security_rules")) == [keep, drop, drop]


def test_deleting_an_unknown_replica_is_not_found(api):
    reply = api.delete("/v1/replicas/999")

    assert reply.status == 404
    assert "error" in reply.json


def test_deleting_a_replica_twice_is_not_found_the_second_time(api, model_id):
    replica_id = api.create_replica(model_id)
    api.delete(f"/v1/replicas/{replica_id}")

    reply = api.delete(f"/v1/replicas/{replica_id}")

    assert reply.status == 404


# Refusals name their reason


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("ftp://10.0.0.1/v1", "it must start with http:// or https://"),
        ("10.0.0.1:8000/v1", "it must start with http:// or https://"),
        ("http:///v1", "it names no host"),
        ("http://10.0.0.1:8000/v1?model=x", "an endpoint has no query (?) or fragment (#)"),
        ("http://10.0.0.1:8000/v1#top", "an endpoint has no query (?) or fragment (#)"),
        ("http://10.0.0.1:99999/v1", "its port must be a number from 0 to 65535"),
        ("http://10.0.0.1:port/v1", "its port must be a number from 0 to 65535"),
    ],
)
def test_bad_endpoint_is_refused_saying_what_is_wrong_with_it(api, model_id, endpoint, reason):
    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": endpoint})

    assert reply.status == 400
    assert reply.json == {"errors": {"endpoint": [f"Not a valid URL: {reason}."]}}


def test_endpoint_conflict_names_the_form_already_stored(api, model_id):
    api.create_replica(model_id, "http://10.0.0.1:8000/v1")

    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "HTTP://10.0.0.1:8000/v1/chat/completions/"})

    assert reply.status == 409
    assert reply.json == {"error": f"Endpoint already exists: model {model_id} has a replica at "
                                   "http://10.0.0.1:8000/v1 already."}


def test_replica_for_a_model_being_deleted_is_not_found_saying_it_is_being_deleted(api, model_id):
    from chalicelib.store.tables import LlmModel

    (model,) = LlmModel.scan(LlmModel.id == model_id)
    model.update(actions=[LlmModel.deleting.set(True)])  # as delete_all marks it before reading its replicas

    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://10.0.0.1:8000/v1"})

    assert reply.status == 404
    assert reply.json == {"error": f"Model {model_id} is being deleted: no replica can be added to it."}


def test_hibernate_after_seconds_update_of_a_replica_by_url_says_it_has_no_vm(api, model_id):
    replica_id = api.create_replica(model_id)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"hibernate_after_seconds": 300})

    assert reply.status == 400
    assert reply.json == {"errors": {"hibernate_after_seconds": [
        f"Replica {replica_id} was registered by URL, with no VM: only a provisioned replica (create_vm) can "
        "hibernate."]}}
