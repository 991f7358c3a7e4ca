"""/v1/tables and /v1/tables/{table_name}: the raw table view, newest first, page by page."""

import base64
import binascii
import hashlib
import json

import pytest

from chalicelib.store.tables import Metric
from tests.unit.conftest import VM_DETAILS

TABLES = ["api_key", "metric", "llm_models", "replicas", "replica_security_rules"]


def add_metrics(count):
    for metric_id in range(1, count + 1):
        Metric(metric_id, api_key_id=1, created=1_700_000_000 + metric_id, model="m").save()


def all_pages(api, table, limit):
    """Every row, following next_token; fails the test on a page that is not 200."""
    ids, token = [], None
    for _ in range(50):
        path = f"/v1/tables/{table}?limit={limit}" + (f"&next_token={token}" if token else "")
        reply = api.get(path)
        assert reply.status == 200, reply.json
        assert len(reply.json["data"]) <= limit
        ids.extend(row["id"] for row in reply.json["data"])
        token = reply.json["next_token"]
        if token is None:
            return ids
    raise AssertionError("next_token never ran out")


def decoded_token(token):
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def encoded_token(key):
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


# GET /v1/tables


def test_table_names_are_listed_in_the_original_order(api):
    reply = api.get("/v1/tables")

    assert reply.status == 200
    assert reply.json == {"tables": TABLES}


# GET /v1/tables/{table_name}


@pytest.mark.parametrize("table", TABLES)
def test_every_listed_table_can_be_read(api, table):
    reply = api.get(f"/v1/tables/{table}")

    assert reply.status == 200
    assert reply.json == {"data": [], "next_token": None}


@pytest.mark.parametrize("table", ["nope", "bookkeeping", "API_KEY", "api_keys"])
def test_unknown_table_is_not_found(api, table):
    reply = api.get(f"/v1/tables/{table}")

    assert reply.status == 404
    assert "error" in reply.json


def test_rows_come_newest_first(api):
    for user in ("a", "b", "c"):
        api.create_key(user)

    reply = api.get("/v1/tables/api_key")

    assert [row["user_id"] for row in reply.json["data"]] == ["c", "b", "a"]
    ids = [row["id"] for row in reply.json["data"]]
    assert ids == sorted(ids, reverse=True)


def test_a_page_holds_100_rows_by_default(api):
    add_metrics(101)

    reply = api.get("/v1/tables/metric")

    assert reply.status == 200
    assert [row["id"] for row in reply.json["data"]] == list(range(101, 1, -1))
    assert isinstance(reply.json["next_token"], str)


def test_the_last_page_has_no_next_token(api):
    add_metrics(101)
    first = api.get("/v1/tables/metric")

    reply = api.get(f"/v1/tables/metric?next_token={first.json['next_token']}")

    assert reply.status == 200
    assert [row["id"] for row in reply.json["data"]] == [1]
    assert reply.json["next_token"] is None


def test_limit_sets_the_page_size(api):
    add_metrics(5)

    reply = api.get("/v1/tables/metric?limit=2")

    assert [row["id"] for row in reply.json["data"]] == [5, 4]
    assert reply.json["next_token"] is not None


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_accepted(api, limit):
    add_metrics(3)

    reply = api.get(f"/v1/tables/metric?limit={limit}")

    assert reply.status == 200
    assert len(reply.json["data"]) == min(int(limit), 3)


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5"])
def test_limit_outside_1_to_100_is_refused(api, limit):
    reply = api.get(f"/v1/tables/metric?limit={limit}")

    assert reply.status == 400
    assert "error" in reply.json


def test_deeply_nested_next_token_is_a_400(api):
    token = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")

    reply = api.get(f"/v1/tables/metric?next_token={token}")

    assert reply.status == 400
    assert reply.json == {"error": "Invalid next_token."}


@pytest.mark.parametrize(("rows", "limit"), [(7, 3), (6, 3), (5, 1), (4, 100)])
def test_following_next_token_visits_every_row_once(api, rows, limit):
    add_metrics(rows)

    ids = all_pages(api, "metric", limit)

    assert ids == list(range(rows, 0, -1))


def test_paging_through_api_keys_visits_every_key_once(api):
    created = [api.create_key(f"user-{n}")["id"] for n in range(5)]

    ids = all_pages(api, "api_key", 2)

    assert ids == sorted(created, reverse=True)


def test_garbage_next_token_is_refused(api):
    add_metrics(3)

    reply = api.get("/v1/tables/metric?next_token=not-a-token")

    assert reply.status == 400
    assert "error" in reply.json


def test_truncated_next_token_is_refused(api):
    add_metrics(3)
    token = api.get("/v1/tables/metric?limit=1").json["next_token"]

    reply = api.get(f"/v1/tables/metric?next_token={token[: len(token) // 2]}")

    assert reply.status == 400
    assert "error" in reply.json


def decoded_fields(token):
    """A real token's fields, to tamper with; the token is base64url JSON naming where a page ends."""
    fields = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert isinstance(fields, dict) and fields
    return fields


WRONG_VALUES = [None, -1, 10**40, 1.5, "garbage", [], {}, True]


@pytest.mark.parametrize("wrong", WRONG_VALUES, ids=["null", "negative", "huge", "float", "string", "list",
                                                     "object", "boolean"])
def test_next_token_with_a_tampered_value_is_refused(api, wrong):
    add_metrics(3)
    fields = decoded_fields(api.get("/v1/tables/metric?limit=1").json["next_token"])

    for name in fields:
        reply = api.get(f"/v1/tables/metric?next_token={encoded_token({**fields, name: wrong})}")

        assert reply.status == 400, (name, reply.json)
        assert "error" in reply.json


def test_next_token_missing_a_field_is_refused(api):
    add_metrics(3)
    fields = decoded_fields(api.get("/v1/tables/metric?limit=1").json["next_token"])

    for name in fields:
        forged = {other: value for other, value in fields.items() if other != name}
        reply = api.get(f"/v1/tables/metric?next_token={encoded_token(forged)}")

        assert reply.status == 400, (name, reply.json)


def test_next_token_with_an_extra_field_is_refused(api):
    add_metrics(3)
    fields = decoded_fields(api.get("/v1/tables/metric?limit=1").json["next_token"])

    reply = api.get(f"/v1/tables/metric?next_token={encoded_token({**fields, 'extra': 1})}")

    assert reply.status == 400


@pytest.mark.parametrize("forged", [[1, 2], "id", 7, {}], ids=["list", "string", "number", "empty-object"])
def test_next_token_that_is_not_a_page_position_is_refused(api, forged):
    add_metrics(3)

    reply = api.get(f"/v1/tables/metric?next_token={encoded_token(forged)}")

    assert reply.status == 400
    assert "error" in reply.json


def test_next_token_of_another_table_is_refused(api):
    for user in ("a", "b"):
        api.create_key(user)
    add_metrics(2)
    token = api.get("/v1/tables/api_key?limit=1").json["next_token"]

    reply = api.get(f"/v1/tables/metric?next_token={token}")

    assert reply.status == 400
    assert "error" in reply.json


# What the rows show


def test_api_key_row_starts_with_the_original_columns(api):
    api.create_key("alice")

    row = api.get("/v1/tables/api_key").json["data"][0]

    assert list(row)[:5] == ["id", "user_id", "api_key", "allowed_rpm", "enabled"]


def test_api_key_row_shows_the_key_masked_to_prefix_and_last_four(api):
    key = api.create_key("alice")
    plaintext = key["api_key"]

    shown = api.get("/v1/tables/api_key").json["data"][0]["api_key"]

    assert shown.startswith("hsk_")
    assert shown.endswith(plaintext[-4:])
    assert shown != plaintext
    assert plaintext[4:-4] not in shown


def test_api_key_page_never_contains_the_secret_or_its_hash(api):
    keys = [api.create_key(user)["api_key"] for user in ("a", "b", "c")]

    body = api.get("/v1/tables/api_key").body.decode()

    for plaintext in keys:
        assert plaintext not in body
        assert plaintext[4:-4] not in body
        assert hashlib.sha256(plaintext.encode()).hexdigest() not in body.lower()


def test_api_key_page_token_does_not_carry_a_key_hash(api):
    keys = [api.create_key(user)["api_key"] for user in ("a", "b", "c")]

    reply = api.get("/v1/tables/api_key?limit=1")

    assert reply.json["next_token"] is not None
    revealed = decoded_token(reply.json["next_token"]).lower()
    for plaintext in keys:
        assert plaintext not in revealed
        assert hashlib.sha256(plaintext.encode()).hexdigest() not in revealed


def test_disabled_key_shows_as_disabled(api):
    key = api.create_key("alice")
    Metric(1, api_key_id=key["id"], created=1_700_000_000, model="m").save()
    api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": key["id"]})

    row = api.get("/v1/tables/api_key").json["data"][0]

    assert row["id"] == key["id"]
    assert row["enabled"] is False


def test_metric_row_shows_the_usage_it_records(api):
    Metric(7, api_key_id=3, created=1_700_000_000, model="org/m", prompt_tokens=5, total_tokens=9).save()

    rows = api.get("/v1/tables/metric").json["data"]

    assert len(rows) == 1
    assert rows[0]["id"] == 7
    assert rows[0]["api_key_id"] == 3
    assert rows[0]["model"] == "org/m"
    assert rows[0]["prompt_tokens"] == 5
    assert rows[0]["total_tokens"] == 9


def test_model_rows_show_id_and_name(api):
    model_id = api.create_model("org/model")

    rows = api.get("/v1/tables/llm_models").json["data"]

    assert [(row["id"], row["name"]) for row in rows] == [(model_id, "org/model")]


def test_replica_rows_show_the_replica(api):
    model_id = api.create_model()
    replica_id = api.create_replica(model_id, "http://10.0.0.5:8000/v1", rate_limit=7)

    rows = api.get("/v1/tables/replicas").json["data"]

    assert len(rows) == 1
    assert rows[0]["id"] == replica_id
    assert rows[0]["model_id"] == model_id
    assert rows[0]["endpoint"] == "http://10.0.0.5:8000/v1"
    assert rows[0]["rate_limit"] == 7


def test_security_rule_rows_name_their_replica(api):
    model_id = api.create_model()
    replica_id = api.post(
        f"/v1/models/{model_id}/replicas",
        {"create_vm": True, "vm_creation_details": {**VM_DETAILS, "security_rules": [
            {"port_range_min": 22, "port_range_max": 22},
        ]}},
    ).json["replica_id"]

    rows = api.get("/v1/tables/replica_security_rules").json["data"]

    assert [(row["replica_id"], row["port_range_min"], row["port_range_max"]) for row in rows] == [
        (replica_id, 22, 22)
    ]


def test_every_table_shares_one_dynamodb_client(api):
    from chalicelib.store.tables import ALL_TABLES

    clients = {id(table._get_connection().connection.client) for table in ALL_TABLES}

    assert len(clients) == 1


def test_unknown_table_names_itself_and_the_tables_there_are(api):
    listed = api.get("/v1/tables").json["tables"]

    reply = api.get("/v1/tables/nope")

    assert reply.status == 404
    assert reply.json == {"error": f'No table "nope": the tables are {", ".join(sorted(listed))}'}
    assert reply.json["error"].endswith("api_key, llm_models, metric, replica_security_rules, replicas")
