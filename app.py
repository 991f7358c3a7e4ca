"""The admin API: each route parses, calls one function in `chalicelib`, and shapes the answer."""

from chalice import Chalice, Rate, Response
from chalice.app import CloudWatchEvent, Request

from chalicelib.admin import (
    api_keys,
    autoscaling,
    llm_models,
    model_catalog,
    replica_retry,
    replicas,
    table_browser,
    usage,
)
from chalicelib.api.http_edge import admin_only, json_body, json_errors, json_route, path_id
from chalicelib.chat import buffered as chat_buffered
from chalicelib.chat.operations import CHAT, COMPLETIONS, EMBEDDINGS, Operation
from chalicelib.core.observability import log_invocation

# Every route is the admin's unless it is listed here: a new route cannot forget to check the key.
PUBLIC_ROUTES = frozenset({
    "/v1/openapi.json",  # so that Swagger UI and client generators can read it without a key
    # users' keys, checked by the data plane itself (chalicelib.chat.service)
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
})
# Routes a user's key may call too, by (path, method): the admin key gets the route's view (the original's
# answer), any other caller is authenticated as a user's key and gets the answer named here (OpenAI's).
USER_ROUTES = {
    ("/v1/models", "GET"): lambda key, path: model_catalog.list_models(key),
    ("/v1/models/{model_ref}", "GET"): lambda key, path: model_catalog.retrieve(key, path["model_ref"]),
}

# Chalice's own logger (app.log: a view's unhandled exception) has the Powertools Logger's name, so it is
# that logger: configure_logs=False keeps Chalice from adding a plain-text handler of its own.
app = Chalice(app_name="hyperstack-llm-proxy", configure_logs=False)
# First, so the outermost: every function's lines, the error middleware's included, carry the
# request id and the correlation id ("all": the routes, `chat` and `provision` alike).
app.register_middleware(log_invocation, "all")
app.register_middleware(json_errors, "http")
app.register_middleware(admin_only(PUBLIC_ROUTES, USER_ROUTES), "http")
route = json_route(app)  # app.route, answering the domain's errors as JSON

NO_CONTENT = Response(body="", status_code=204)
# Bodies are read as JSON whatever their declared type (curl -d sends a form type); what is not
# JSON gets a clear 400 rather than a 415.
ANY_BODY = ["*/*"]


def request() -> Request:
    return app.current_request


@route("/v1/generate_api_key", methods=["POST"], content_types=ANY_BODY)
def generate_api_key() -> dict:
    return api_keys.generate(json_body(request()))


@route("/v1/delete_api_key", methods=["POST"], content_types=ANY_BODY)
def delete_api_key() -> dict:
    return {"message": api_keys.delete(json_body(request()))}


@route("/v1/tables", methods=["GET"])
def list_tables() -> dict:
    return {"tables": table_browser.table_names()}


@route("/v1/tables/{table_name}", methods=["GET"])
def read_table(table_name: str) -> dict:
    query = request().query_params or {}
    return table_browser.page(table_name, query.get("limit"), query.get("next_token"))


@route("/v1/usage", methods=["GET"])
def usage_summary() -> dict:
    return usage.summary(request().query_params or {})


# With a user's key, this GET and the model's below answer OpenAI's model list and object (USER_ROUTES).
@route("/v1/models", methods=["GET"])
def list_models() -> list:
    query = request().query_params or {}
    return llm_models.list_models(active_only=query.get("active", "").lower() in ("true", "1"))


@route("/v1/models", methods=["POST"], content_types=ANY_BODY)
def create_model() -> Response:
    return Response(body=llm_models.create(json_body(request())), status_code=201)


# API Gateway allows one variable name per path level: GET reads a model name, DELETE an id.
@route("/v1/models/{model_ref}", methods=["GET", "DELETE"])
def model(model_ref: str) -> dict | Response:
    if request().method == "GET":
        return llm_models.get(model_ref)
    llm_models.delete(path_id(model_ref, "Model"))
    return NO_CONTENT


@route("/v1/models/{model_ref}/replicas", methods=["GET"])
def list_replicas(model_ref: str) -> list:
    return replicas.list_for_model(path_id(model_ref, "Model"))


@route("/v1/models/{model_ref}/replicas", methods=["POST"], content_types=ANY_BODY)
def create_replica(model_ref: str) -> Response:
    body = json_body(request())
    replica_id = replicas.create(path_id(model_ref, "Model"), body)
    return Response(body={"replica_id": replica_id}, status_code=201)


@route("/v1/models/{model_ref}/autoscaling", methods=["PUT"], content_types=ANY_BODY)
def set_autoscaling(model_ref: str) -> dict:
    return autoscaling.put(path_id(model_ref, "Model"), json_body(request()))


@route("/v1/models/{model_ref}/autoscaling", methods=["GET", "DELETE"])
def autoscaling_settings(model_ref: str) -> dict | Response:
    if request().method == "GET":
        return autoscaling.get(path_id(model_ref, "Model"))
    autoscaling.delete(path_id(model_ref, "Model"))
    return NO_CONTENT


@route("/v1/models/replicas/{replica_id}", methods=["PUT"], content_types=ANY_BODY)
def update_replica(replica_id: str) -> Response:
    body = json_body(request())
    replicas.update(path_id(replica_id, "Replica"), body)
    return NO_CONTENT


@route("/v1/replicas/{replica_id}", methods=["DELETE"])
def delete_replica(replica_id: str) -> Response:
    replicas.delete(path_id(replica_id, "Replica"))
    return NO_CONTENT


@route("/v1/replicas/{replica_id}/hibernate", methods=["POST"], content_types=ANY_BODY)
def hibernate_replica(replica_id: str) -> Response:
    replicas.hibernate(path_id(replica_id, "Replica"))
    return Response(body={"message": "Hibernation started"}, status_code=202)


@route("/v1/replicas/{replica_id}/retry", methods=["POST"], content_types=ANY_BODY)
def retry_replica(replica_id: str) -> Response:
    replica_retry.retry(path_id(replica_id, "Replica"), json_body(request()))
    return Response(body={"message": "Provisioning started"}, status_code=202)


@route("/v1/replicas/{replica_id}/wake", methods=["POST"], content_types=ANY_BODY)
def wake_replica(replica_id: str) -> Response:
    replicas.wake(path_id(replica_id, "Replica"))
    return Response(body={"message": "Wake started"}, status_code=202)


@route("/v1/openapi.json", methods=["GET"])
def openapi_document() -> dict:
    from chalicelib.api import openapi  # here, so that no other route's cold start pays for it

    request = app.current_request
    return openapi.build_document(app.routes, openapi.server_url(request.headers, request.context))


# In AWS, API Gateway sends these three routes to the `chat` function below in streaming mode (see
# infra/template.json), and `make run` streams them too; these buffered forms serve `chalice local` and
# `chalice deploy`. One pipeline, parameterised by the operation (chalicelib/chat/operations.py).
@route("/v1/chat/completions", methods=["POST"], content_types=ANY_BODY)
def chat_completions() -> Response:
    return _relayed(CHAT)


@route("/v1/completions", methods=["POST"], content_types=ANY_BODY)
def completions() -> Response:
    return _relayed(COMPLETIONS)


@route("/v1/embeddings", methods=["POST"], content_types=ANY_BODY)
def embeddings() -> Response:
    return _relayed(EMBEDDINGS)


def _relayed(operation: Operation) -> Response:
    request = app.current_request
    headers = {name.lower(): value for name, value in request.headers.items()}
    context = getattr(app, "lambda_context", None)  # Lambda's; also the test client's and `chalice local`'s
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else None
    status, response_headers, body = chat_buffered.answer_whole(headers, request.raw_body or b"", operation, remaining)
    return Response(body=body, status_code=status, headers=response_headers)


# The streaming chat function: its exec wrapper (chalicelib/chat/bootstrap) runs our own
# Runtime API loop, which streams. This handler answers whole only if the wrapper is not set.
@app.lambda_function(name="chat")
def chat(event: dict, context: object) -> dict:
    return chat_buffered.lambda_response(event)


# Every Task state of the provisioning workflow (infra/provisioning.asl.json) invokes this function.
@app.lambda_function(name="provision")
def provision(event: dict, context: object) -> dict:
    from chalicelib.provisioning.tasks import handle  # here, so the admin API's cold start stays lean

    return handle(event)


# The backstop of "no VM outlives its replica" (chalicelib/provisioning/reconciler.py): every
# RECONCILE_INTERVAL_SECONDS' default, 900 s (an EventBridge schedule; `make run` runs it every few seconds).
@app.schedule(Rate(15, unit=Rate.MINUTES), name="reconcile")
def reconcile(event: object) -> dict:
    from chalicelib.provisioning import reconciler  # here, so the admin API's cold start stays lean

    return reconciler.run().as_dict()


# Hibernates replicas idle for their hibernate_after_seconds (chalicelib/provisioning/idle_check.py): every
# IDLE_CHECK_SECONDS' default, 60 s, EventBridge's finest rate (`make run` checks every second).
@app.schedule(Rate(1, unit=Rate.MINUTES), name="idle_check")
def idle_check(event: object) -> dict:
    from chalicelib.provisioning import idle_check as check

    return check.run()


# Scales each model with autoscaling to its load (chalicelib/admin/scaler.py): every SCALE_CHECK_SECONDS'
# default, 60 s, EventBridge's finest rate (`make run` scales every few seconds).
# A request refused for want of capacity invokes it too, for its model (chalicelib/chat/nudge.py).
@app.schedule(Rate(1, unit=Rate.MINUTES), name="scale")
def scale(event: CloudWatchEvent) -> dict:
    from chalicelib.admin import scaler

    return scaler.handle(event.to_dict())
