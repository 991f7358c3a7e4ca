"""The buffered chat route (`chalice local`, Chalice's test client) answers as the streaming one does."""

import json


def test_chat_route_without_a_key_is_an_openai_shaped_401(api):
    reply = api.post("/v1/chat/completions", {"model": "m/x", "messages": [{"role": "user", "content": "hi"}]},
                     key=None)

    assert reply.status == 401
    assert reply.json["error"]["type"] == "authentication_error"


def test_chat_route_names_an_unknown_model(api):
    key = api.create_key()["api_key"]

    reply = api.post("/v1/chat/completions", {"model": "no/model", "messages": [{"role": "user", "content": "hi"}]},
                     key=key)

    assert reply.status == 404
    assert reply.json["error"]["code"] == "model_not_found"


def test_chat_lambda_handler_answers_a_function_url_event_whole(api):
    from app import chat

    event = {"version": "2.0", "rawPath": "/v1/chat/completions", "headers": {"content-type": "application/json"},
             "requestContext": {"http": {"method": "POST", "path": "/v1/chat/completions"}},
             "body": json.dumps({"model": "m/x", "messages": []}), "isBase64Encoded": False}

    result = chat(event, None)

    assert result["statusCode"] == 401
    assert json.loads(result["body"])["error"]["code"] == "invalid_api_key"
