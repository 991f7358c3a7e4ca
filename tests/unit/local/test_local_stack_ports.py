"""Where `make run` puts its side listeners, and the line naming the real model's (infra/local)."""

import importlib
import socket
from types import SimpleNamespace

from infra.local import ports
from tests.conftest import free_run

run = importlib.import_module("infra.local.__main__")


def test_side_ports_follow_port_when_free(monkeypatch):
    base = free_run(1 + len(ports.SIDE_PORT_OFFSETS))
    monkeypatch.setenv("PORT", str(base))
    for variable in ports.SIDE_PORT_OFFSETS:
        monkeypatch.delenv(variable, raising=False)

    chosen = {variable: ports.side_port(variable) for variable in ports.SIDE_PORT_OFFSETS}

    assert sorted(chosen.values()) == [base + 1, base + 2, base + 3, base + 4]


def test_a_taken_side_port_falls_back_to_a_free_one(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        monkeypatch.setenv("PORT", str(taken.getsockname()[1] - 1))
        monkeypatch.delenv("MOCK_REPLICA_PORT", raising=False)

        assert ports.side_port("MOCK_REPLICA_PORT") == 0


def test_a_side_port_set_by_the_developer_is_used_as_given(monkeypatch):
    monkeypatch.setenv("PORT", "8000")
    monkeypatch.setenv("MOCK_REPLICA_PORT", "8101")

    assert ports.side_port("MOCK_REPLICA_PORT") == 8101


def test_the_real_model_line_names_where_it_listens():
    replica = SimpleNamespace(alias="org/Model", base_url="http://127.0.0.1:8002/v1", address="http://127.0.0.1:8002")

    first = run._local_replica_lines(replica, "http://127.0.0.1:8000/v1", "dev-admin-key")[0]

    assert first.startswith("Real model: http://127.0.0.1:8002/v1 ")
