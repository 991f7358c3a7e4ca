"""The mock vLLM replica over real HTTP: what the proxy's tests and benchmark stand on."""

import http.client
import json
import threading
import time

import pytest
import requests

from infra.local.mock_vllm import MockVllm

MODEL = "mock/model"


@pytest.fixture
def replica():
    with MockVllm(model=MODEL) as server:
        yield server


def chat(**fields):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say hello to the test."}], **fields}


def post_chat(server, body, **kwargs):
    return requests.post(f"{server.base_url}/chat/completions", json=body, timeout=kwargs.pop("timeout", 10), **kwargs)


def data_lines(response):
    """The non-blank lines of a streamed body, each as soon as it arrives."""
    return (line for line in response.iter_lines() if line)


def test_non_streamed_chat_answers_json_with_a_content_length(replica):
    reply = post_chat(replica, chat(max_tokens=5))

    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert int(reply.headers["Content-Length"]) == len(reply.content)
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Mock answer to: Say"
    assert body["usage"]["completion_tokens"] == 5


def test_streamed_chat_is_chunked_sse_ending_with_done(replica):
    with post_chat(replica, chat(stream=True, stream_options={"include_usage": True}), stream=True) as reply:
        lines = list(data_lines(reply))

    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.headers["Transfer-Encoding"] == "chunked"
    assert lines[-1] == b"data: [DONE]"
    usage_chunk = json.loads(lines[-2].removeprefix(b"data: "))
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 0


def test_streamed_events_arrive_as_they_are_paced():
    with MockVllm(model=MODEL, pace_seconds=0.05) as paced:
        started = time.monotonic()
        arrivals = []
        with post_chat(paced, chat(stream=True, max_tokens=10), stream=True) as reply:
            for _ in data_lines(reply):
                arrivals.append(time.monotonic() - started)

    assert len(arrivals) == 13  # role, 10 tokens, finish, [DONE]
    assert arrivals[0] < arrivals[-1] / 2


def test_connection_is_reused_across_requests(replica):
    with requests.Session() as session:
        for body in (chat(), chat(stream=True), chat()):
            reply = session.post(f"{replica.base_url}/chat/completions", json=body, timeout=10)
            assert reply.status_code == 200

    assert replica.requests_seen == 3


def test_models_and_health(replica):
    models = requests.get(f"{replica.base_url}/models", timeout=10)
    health = requests.get(f"http://127.0.0.1:{replica.port}/health", timeout=10)

    assert models.status_code == 200
    assert [card["id"] for card in models.json()["data"]] == [MODEL]
    assert health.status_code == 200


def test_requests_seen_and_last_request_show_what_was_forwarded(replica):
    body = chat(stream=True, stream_options={"include_usage": True})

    post_chat(replica, chat()).close()
    post_chat(replica, body).close()

    assert replica.requests_seen == 2
    assert replica.last_request == body


def test_unknown_model_is_a_404_with_vllm_error_body(replica):
    reply = post_chat(replica, chat(model="other/model"))

    assert reply.status_code == 404
    assert reply.json() == {"object": "error", "message": "The model `other/model` does not exist.",
                            "type": "NotFoundError", "param": None, "code": 404}


@pytest.mark.parametrize("raw", [b"{not json", b'{"model": "mock/model"}', b"[]"])
def test_invalid_json_or_missing_messages_is_a_400(replica, raw):
    reply = requests.post(f"{replica.base_url}/chat/completions", data=raw, timeout=10,
                          headers={"Content-Type": "application/json"})

    assert reply.status_code == 400
    assert reply.json()["object"] == "error"
    assert reply.json()["code"] == 400


@pytest.mark.parametrize(("mode", "status", "error_type"), [
    ("error500", 500, "InternalServerError"),
    ("error400", 400, "BadRequestError"),
])
def test_error_modes_answer_a_vllm_error_body(mode, status, error_type):
    with MockVllm(model=MODEL, mode=mode) as failing:
        reply = post_chat(failing, chat(stream=True))

    assert reply.status_code == status
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["type"] == error_type
    assert failing.requests_seen == 1


def test_mode_can_be_flipped_on_a_running_replica(replica):
    first = post_chat(replica, chat())
    replica.mode = "error500"
    second = post_chat(replica, chat())
    replica.mode = "ok"
    third = post_chat(replica, chat())

    assert [first.status_code, second.status_code, third.status_code] == [200, 500, 200]


def test_unknown_mode_is_refused_and_points_refuse_at_stop(replica):
    with pytest.raises(ValueError, match="stop"):
        replica.mode = "refuse"


def test_stall_fires_the_client_read_timeout_and_does_not_hold_up_stop():
    stalling = MockVllm(model=MODEL, mode="stall").start()
    try:
        with pytest.raises(requests.ReadTimeout):
            post_chat(stalling, chat(), timeout=(2, 0.5))
        assert stalling.requests_seen == 1
    finally:
        stopping = time.monotonic()
        stalling.stop()

    assert time.monotonic() - stopping < 2


def test_die_mid_stream_truncates_the_stream_without_done():
    received = []
    with MockVllm(model=MODEL, mode="die_mid_stream") as dying:
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
            with post_chat(dying, chat(stream=True), stream=True) as reply:
                for line in data_lines(reply):
                    received.append(line)

    assert reply.status_code == 200
    assert 0 < len(received) < 10
    assert b"data: [DONE]" not in received


def test_die_mid_stream_cuts_a_non_streamed_body_short():
    with MockVllm(model=MODEL, mode="die_mid_stream") as dying:
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
            post_chat(dying, chat())


def test_stopped_replica_refuses_connections_and_comes_back_on_its_port():
    server = MockVllm(model=MODEL).start()
    port = server.port
    server.stop()

    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    with server.start():
        assert server.port == port
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200


def test_stop_ends_a_stream_in_progress_and_leaves_no_thread():
    before = set(threading.enumerate())
    server = MockVllm(model=MODEL, pace_seconds=0.2).start()
    reply = post_chat(server, chat(stream=True, max_tokens=50), stream=True)
    first_line = next(reply.iter_lines())

    stopping = time.monotonic()
    server.stop()
    took = time.monotonic() - stopping
    reply.close()

    assert first_line.startswith(b"data: ")
    assert took < 2
    assert set(threading.enumerate()) - before == set()


def test_stop_ends_idle_keep_alive_connections_promptly():
    before = set(threading.enumerate())
    server = MockVllm(model=MODEL).start()
    with requests.Session() as session:
        assert session.get(f"{server.base_url}/models", timeout=10).status_code == 200

        stopping = time.monotonic()
        server.stop()
        took = time.monotonic() - stopping

    assert took < 2
    assert set(threading.enumerate()) - before == set()


# --- SSE dialects and faults ---------------------------------------------------------------------


def raw_chunks(server, body, timeout=10):
    """The HTTP chunks of a streamed reply as they came off the wire, and whether the last chunk came."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    reply = connection.getresponse()
    assert reply.getheader("Transfer-Encoding") == "chunked"
    chunks = []
    try:
        while True:
            size = int(reply.fp.readline().split(b";")[0], 16)
            if size == 0:
                return chunks, True
            chunks.append(reply.fp.read(size))
            reply.fp.readline()
    except (ValueError, OSError):
        return chunks, False
    finally:
        connection.close()


def stream_in(mode, **fields):
    with MockVllm(model=MODEL, mode=mode) as server:
        return raw_chunks(server, chat(stream=True, **fields))


def test_crlf_mode_ends_every_event_with_crlf_crlf():
    chunks, complete = stream_in("crlf")

    assert complete
    assert all(chunk.endswith(b"\r\n\r\n") and chunk.count(b"\n") == 2 for chunk in chunks)
    assert chunks[-1] == b"data: [DONE]\r\n\r\n"


def test_split_cr_mode_ends_http_chunks_on_a_cr_and_starts_the_next_with_its_lf():
    chunks, complete = stream_in("split_cr")

    assert complete
    assert b"".join(chunks).endswith(b"data: [DONE]\r\n\r\n")
    assert all(b"\r" not in chunk[:-1] for chunk in chunks)  # a CR only ever ends a chunk
    after_cr = [following for chunk, following in zip(chunks, chunks[1:], strict=False) if chunk.endswith(b"\r")]
    assert len(after_cr) > 20 and all(following.startswith(b"\n") for following in after_cr)


def test_keepalive_mode_sends_comments_fields_and_multi_line_data():
    chunks, complete = stream_in("keepalive")
    body = b"".join(chunks)

    assert complete
    assert chunks[0] == b"retry: 3000\n\n"
    assert body.count(b": ping - ") == body.count(b"event: completion.chunk\n") + 1  # and one before [DONE]
    assert b'",\ndata: "object":' in body and b"\nid: 1\n" in body


def test_no_done_mode_ends_cleanly_without_done():
    chunks, complete = stream_in("no_done")

    assert complete
    assert b"[DONE]" not in b"".join(chunks)
    assert chunks[-1].startswith(b"data: {")


def test_done_no_blank_mode_ends_with_done_and_no_line_end():
    chunks, complete = stream_in("done_no_blank")

    assert complete
    assert chunks[-1] == b"data: [DONE]"


def test_oversized_event_mode_sends_one_event_over_a_mebibyte_then_the_rest():
    chunks, complete = stream_in("oversized_event")
    events = b"".join(chunks).split(b"\n\n")

    assert complete
    assert max(len(event) for event in events) > 1024 * 1024
    assert events[-2] == b"data: [DONE]"


def test_trickle_mode_sends_a_byte_at_a_time():
    with MockVllm(model=MODEL, mode="trickle") as server:
        reply = post_chat(server, chat(stream=True), stream=True)
        started = time.monotonic()
        first = reply.raw.read(20)
        took = time.monotonic() - started
        reply.close()

    assert first.startswith(b"data: {") and len(first) == 20
    assert took >= 19 * 0.05 * 0.8  # twenty bytes, a tick apart


def test_idle_mode_sends_one_event_then_nothing_until_the_client_leaves():
    with MockVllm(model=MODEL, mode="idle") as server:
        with pytest.raises(requests.exceptions.ConnectionError):  # urllib3's read timeout, mid-body
            with post_chat(server, chat(stream=True), stream=True, timeout=(2, 0.5)) as reply:
                lines = []
                for line in data_lines(reply):
                    lines.append(line)
        deadline = time.monotonic() + 2
        while server.replies_in_progress and time.monotonic() < deadline:
            time.sleep(0.05)

        assert len(lines) == 1
        assert server.replies_in_progress == 0  # the replica noticed the client leave


def test_idle_mode_holds_back_half_a_non_streamed_body():
    with MockVllm(model=MODEL, mode="idle") as server:
        with pytest.raises(requests.exceptions.ConnectionError):
            post_chat(server, chat(), timeout=(2, 0.5))


def test_replica_with_an_api_key_refuses_v1_without_its_bearer_as_vllm_does():
    with MockVllm(api_key="sk-mock") as guarded:
        models = requests.get(guarded.base_url + "/models", timeout=5)
        wrong = requests.get(guarded.base_url + "/models", headers={"Authorization": "Bearer other"}, timeout=5)
        right = requests.get(guarded.base_url + "/models", headers={"Authorization": "Bearer sk-mock"}, timeout=5)
        health = requests.get(f"http://127.0.0.1:{guarded.port}/health", timeout=5)

    assert (models.status_code, models.json()) == (401, {"error": "Unauthorized"})
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert health.status_code == 200
