"""The HTTP edge of the admin API: parsing what arrives, who calls, and shaping every error as JSON."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from chalice import Chalice
from chalice.app import Request, Response

from chalicelib.admin import model_catalog
from chalicelib.admin.schemas import MAX_ID
from chalicelib.chat import openai_errors
from chalicelib.core import bounded_json
from chalicelib.core.bearer import bearer_token
from chalicelib.core.clock import now
from chalicelib.core.errors import ApiError, NotFound, PayloadTooLarge, Unauthorized
from chalicelib.core.observability import logger
from chalicelib.core.settings import admin_api_key, get_settings

View = Callable[..., Any]
Middleware = Callable[[Request, Callable[[Request], Response]], Response]
# A user's answer on a route a user's key may call: the authenticated key and the path's parameters in.
UserAnswer = Callable[[model_catalog.UserKey, Mapping[str, str]], Any]


def json_body(request: Request) -> Any:
    """The body as JSON; an empty body is `{}` so that validation names the missing fields."""
    raw = request.raw_body or b""
    if len(raw) > get_settings().max_admin_body_bytes:
        raise PayloadTooLarge("Request body is too large.")
    if not raw.strip():
        return {}
    return bounded_json.loads(raw)


def path_id(segment: str, what: str) -> int:
    """An integer id from the path; anything else names nothing, so it is a 404."""
    if segment.isascii() and segment.isdigit() and 0 < int(segment) <= MAX_ID:
        return int(segment)
    raise NotFound(f"{what} not found")


def admin_only(public_routes: frozenset[str], user_routes: Mapping[tuple[str, str], UserAnswer]) -> Middleware:
    """Chalice middleware: the admin key is required on every route but `public_routes` (route paths).

    On a (route path, method) of `user_routes`, the admin key gets the route's view, as everywhere,
    and any other caller is authenticated as a user's key and answered by that entry instead, in
    OpenAI's shape. No view ever runs without the admin key: it cannot give a user the admin's answer.
    """

    def middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
        route = request.context.get("resourcePath")
        if route in public_routes or is_admin(request):
            return get_response(request)
        user_answer = user_routes.get((route, request.method))
        if user_answer is None:
            raise Unauthorized("Invalid Admin API key.")
        return _answer_user(request, user_answer)

    return middleware


def is_admin(request: Request) -> bool:
    expected = admin_api_key()
    presented = bearer_token(request.headers.get("authorization"))
    # Compare digests so that neither the content nor the length of the key leaks through timing.
    return bool(expected and presented and hmac.compare_digest(_digest(presented), _digest(expected)))


def _answer_user(request: Request, user_answer: UserAnswer) -> Response:
    """A user's key on a route it may call: OpenAI's answer, and every error in OpenAI's shape."""
    try:
        key = model_catalog.authenticate(bearer_token(request.headers.get("authorization")), now())
        return _json(Response(body=user_answer(key, request.uri_params or {}), status_code=200))
    except ApiError as error:
        failure = error
    except Exception:
        logger.exception("unhandled error", extra={"path": request.path})
        failure = ApiError(openai_errors.INTERNAL_ERROR)
    return _json(Response(body=openai_errors.error_body(failure), status_code=failure.status,
                          headers=dict(failure.headers)))


def json_route(app: Chalice) -> Callable[..., Callable[[View], View]]:
    """`app.route`, whose view answers the domain's errors as JSON (Chalice would make them 500s)."""

    def route(path: str, **options: Any) -> Callable[[View], View]:
        def register(view: View) -> View:
            @functools.wraps(view)
            def answering_errors(*args: Any, **kwargs: Any) -> Any:
                try:
                    return view(*args, **kwargs)
                except ApiError as error:
                    return error_response(error)

            return app.route(path, **options)(answering_errors)

        return register

    return route


def error_response(error: ApiError) -> Response:
    return _json(Response(body=error.body(), status_code=error.status, headers=dict(error.headers)))


def json_errors(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """Chalice middleware: errors raised by middleware (the admin key's) and Chalice's own leave as JSON."""
    try:
        response = get_response(request)
    except ApiError as error:
        return error_response(error)
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        if response.status_code >= 500:
            logger.error("unhandled error", extra={"path": request.path, "code": body["Code"]})
            return _json(Response(body={"error": "Internal server error."}, status_code=500))
        return _json(Response(body={"error": body["Message"]}, status_code=response.status_code,
                              headers=response.headers))
    return _json(response)


def _json(response: Response) -> Response:
    """Chalice types only the bodies that views return bare; a `Response` it leaves untyped."""
    if isinstance(response.body, (dict, list)) and not any(name.lower() == "content-type" for name in response.headers):
        response.headers["Content-Type"] = "application/json"
    return response


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()
