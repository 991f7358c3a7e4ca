"""/v1/generate_api_key and /v1/delete_api_key."""

import time

import pytest

from chalicelib.store.tables import Metric

MISSING = ["Missing data for required field."]


def key_rows(api):
    reply = api.get("/v1/tables/api_key")
    assert reply.status == 200, reply.json
    return reply.json["data"]


def mark_used(key_id):
    Metric(1, api_key_id=key_id, created=int(time.time()), model="m").save()


# generate_api_key


def test_generated_key_is_returned_with_its_record(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "allowed_rpm": 30})

    assert reply.status == 200
    assert reply.json["user_id"] == "alice"
    assert reply.json["allowed_rpm"] == 30
    assert reply.json["enabled"] is True
    assert isinstance(reply.json["id"], int)
    assert isinstance(reply.json["api_key"], str)


def test_generated_key_has_the_recognisable_prefix(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice"})

    assert reply.json["api_key"].startswith("hsk_")
    assert len(reply.json["api_key"]) > len("hsk_") + 16


def test_allowed_rpm_defaults_to_160(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice"})

    assert reply.json["allowed_rpm"] == 160


def test_allowed_rpm_may_be_sent_as_a_numeric_string(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "allowed_rpm": "50"})

    assert reply.status == 200
    assert reply.json["allowed_rpm"] == 50


@pytest.mark.parametrize("allowed_rpm", [0, -5, "0"])
def test_allowed_rpm_below_one_is_refused_naming_the_field(api, allowed_rpm):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "allowed_rpm": allowed_rpm})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"allowed_rpm"}


def test_allowed_rpm_that_is_not_a_number_is_refused(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "allowed_rpm": "many"})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"allowed_rpm"}


def test_each_generated_key_is_different(api):
    first = api.create_key("alice")
    second = api.create_key("alice")

    assert first["api_key"] != second["api_key"]
    assert first["id"] != second["id"]


def test_generated_key_is_listed_enabled_in_the_key_table(api):
    key = api.create_key("bob", allowed_rpm=12)

    rows = key_rows(api)

    assert [(row["id"], row["user_id"], row["allowed_rpm"], row["enabled"]) for row in rows] == [
        (key["id"], "bob", 12, True)
    ]


def test_plaintext_key_is_not_shown_after_generation(api):
    key = api.create_key("alice")

    reply = api.get("/v1/tables/api_key")

    assert key["api_key"] not in reply.body.decode()


def test_missing_user_id_is_refused_with_the_marshmallow_message(api):
    reply = api.post("/v1/generate_api_key", {})

    assert reply.status == 400
    assert reply.json == {"errors": {"user_id": MISSING}}


def test_empty_body_is_refused_naming_user_id(api):
    reply = api.post("/v1/generate_api_key", raw="")

    assert reply.status == 400
    assert reply.json == {"errors": {"user_id": MISSING}}


def test_empty_user_id_is_refused_naming_user_id(api):
    reply = api.post("/v1/generate_api_key", {"user_id": ""})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"user_id"}


def test_null_user_id_is_refused_naming_user_id(api):
    reply = api.post("/v1/generate_api_key", {"user_id": None})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"user_id"}


def test_unknown_field_is_refused_by_name(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "rpm": 5})

    assert reply.status == 400
    assert reply.json == {"errors": {"rpm": ["Unknown field."]}}


def test_refused_generation_creates_no_key(api):
    api.post("/v1/generate_api_key", {"user_id": "alice", "allowed_rpm": 0})
    api.post("/v1/generate_api_key", {"user_id": "alice", "expires_at": "2001-01-01T00:00:00Z"})

    assert key_rows(api) == []


def test_models_restrict_a_key_to_the_named_models(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "models": ["org/a", "org/b"]})

    assert reply.status == 200
    assert reply.json["models"] == ["org/a", "org/b"]
    assert key_rows(api)[0]["models"] == ["org/a", "org/b"]


def test_absent_models_means_all_models(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice"})

    assert reply.json["models"] is None


def test_null_models_means_all_models(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "models": None})

    assert reply.status == 200
    assert reply.json["models"] is None


def test_models_that_is_not_a_list_of_names_is_refused(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "models": "org/a"})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"models"}


def test_expires_at_accepts_a_future_iso_8601_moment(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "expires_at": "2099-01-01T00:00:00Z"})

    assert reply.status == 200
    assert reply.json["expires_at"] is not None


def test_expires_at_in_unix_seconds_and_in_iso_8601_mean_the_same_moment(api):
    as_iso = api.create_key("alice", expires_at="2099-01-01T00:00:00Z")
    as_seconds = api.create_key("alice", expires_at=4070908800)

    assert as_seconds["expires_at"] == as_iso["expires_at"]


def test_expires_at_with_a_utc_offset_is_the_same_moment_in_utc(api):
    in_utc = api.create_key("alice", expires_at="2099-01-01T00:00:00Z")
    with_offset = api.create_key("alice", expires_at="2099-01-01T02:00:00+02:00")

    assert with_offset["expires_at"] == in_utc["expires_at"]


def test_key_without_expiry_never_expires(api):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice"})

    assert reply.json["expires_at"] is None


@pytest.mark.parametrize(
    "expires_at",
    ["2001-01-01T00:00:00Z", 1_000_000_000, "1000000000", "next tuesday", "", True],
    ids=["past-iso", "past-seconds", "past-seconds-string", "not-a-date", "empty", "boolean"],
)
def test_expires_at_that_is_not_a_future_moment_is_refused_naming_the_field(api, expires_at):
    reply = api.post("/v1/generate_api_key", {"user_id": "alice", "expires_at": expires_at})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"expires_at"}


# delete_api_key


def test_deleting_a_never_used_key_deletes_it(api):
    key = api.create_key("alice")

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": key["id"]})

    assert reply.status == 200
    assert reply.json == {"message": "API key deleted successfully"}
    assert key_rows(api) == []


def test_deleting_a_used_key_disables_it_instead(api):
    key = api.create_key("alice")
    mark_used(key["id"])

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": key["id"]})

    assert reply.status == 200
    assert reply.json == {"message": "API key disabled successfully"}
    assert [(row["id"], row["enabled"]) for row in key_rows(api)] == [(key["id"], False)]


def test_usage_of_another_key_does_not_keep_a_key_from_being_deleted(api):
    used = api.create_key("alice")
    unused = api.create_key("alice")
    mark_used(used["id"])

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": unused["id"]})

    assert reply.json == {"message": "API key deleted successfully"}
    assert [row["id"] for row in key_rows(api)] == [used["id"]]


def test_deleting_a_key_leaves_the_other_keys(api):
    keep = api.create_key("alice")
    drop = api.create_key("alice")

    api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": drop["id"]})

    assert [row["id"] for row in key_rows(api)] == [keep["id"]]


def test_api_key_id_may_be_sent_as_a_numeric_string(api):
    key = api.create_key("alice")

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": str(key["id"])})

    assert reply.status == 200
    assert reply.json == {"message": "API key deleted successfully"}


def test_deleting_another_users_key_is_not_found_and_keeps_it(api):
    key = api.create_key("alice")

    reply = api.post("/v1/delete_api_key", {"user_id": "mallory", "api_key_id": key["id"]})

    assert reply.status == 404
    assert "error" in reply.json
    assert [row["id"] for row in key_rows(api)] == [key["id"]]


def test_deleting_an_unknown_key_is_not_found(api):
    api.create_key("alice")

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": 999})

    assert reply.status == 404
    assert "error" in reply.json


def test_deleting_a_deleted_key_is_not_found(api):
    key = api.create_key("alice")
    api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": key["id"]})

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": key["id"]})

    assert reply.status == 404


def test_deleting_an_already_disabled_key_is_a_conflict(api):
    key = api.create_key("alice")
    mark_used(key["id"])
    api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": key["id"]})

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": key["id"]})

    assert reply.status == 409
    assert "error" in reply.json


@pytest.mark.parametrize("field", ["user_id", "api_key_id"])
def test_delete_without_a_required_field_names_it(api, field):
    body = {"user_id": "alice", "api_key_id": 1}
    del body[field]

    reply = api.post("/v1/delete_api_key", body)

    assert reply.status == 400
    assert reply.json == {"errors": {field: MISSING}}


@pytest.mark.parametrize("api_key_id", ["abc", "1.5", 0, -1])
def test_delete_with_an_api_key_id_that_is_not_a_positive_integer_is_refused(api, api_key_id):
    key = api.create_key("alice")

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": api_key_id})

    assert reply.status in (400, 404)
    assert reply.json.keys() & {"error", "errors"}
    assert [row["id"] for row in key_rows(api)] == [key["id"]]


def test_delete_with_an_unknown_field_is_refused_by_name(api):
    key = api.create_key("alice")

    reply = api.post("/v1/delete_api_key", {"user_id": "alice", "api_key_id": key["id"], "force": True})

    assert reply.status == 400
    assert reply.json == {"errors": {"force": ["Unknown field."]}}
    assert [row["id"] for row in key_rows(api)] == [key["id"]]
