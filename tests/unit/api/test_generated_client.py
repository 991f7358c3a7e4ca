"""The OpenAPI document makes a whole client: openapi-python-client generates every operation and skips none."""

import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.admin.schemas import CREATE_REPLICA
from chalicelib.api import openapi
from chalicelib.core.validation import validate

SERVER = "http://127.0.0.1:8000"
PACKAGE = "llm_proxy_client"
# What the generator prints when it leaves something out (it still exits 0 then): "WARNING parsing POST ... Endpoint
# will not be generated.", "Unable to process schema ...", "Failure to process schema has resulted in the removal
# of ...", under "Warning(s) encountered while generating".
LEFT_OUT = re.compile(r"warning|will not be generated|unable to (?:process|parse)|removal of", re.IGNORECASE)


def _document() -> dict:
    from app import app

    return openapi.build_document(app.routes, SERVER)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path, dict]:
    """The generator's run on the document, the package it wrote, and the document."""
    if importlib.util.find_spec("openapi_python_client") is None:
        pytest.fail("openapi-python-client is not installed: pip install -r requirements-dev.txt", pytrace=False)
    work = tmp_path_factory.mktemp("client")
    document = _document()
    (work / "openapi.json").write_text(json.dumps(document))
    # No post hooks (ruff check --fix, ruff format): what is generated is the question, not how it is formatted.
    (work / "config.json").write_text(json.dumps({"post_hooks": []}))
    run = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(work / "openapi.json"),
         "--config", str(work / "config.json"), "--output-path", str(work / PACKAGE), "--meta", "none",
         "--fail-on-warning"],
        capture_output=True, text=True, timeout=60, check=False)
    return run, work / PACKAGE, document


def _snake(name: str) -> str:
    """A tag or an operationId as the generator names its folder or module: `api keys`, `getOpenApiDocument`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).replace(" ", "_").lower()


def _operations(document: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, operation) for path, item in document["paths"].items() for method, operation in item.items()]


def test_generator_leaves_nothing_out(generated):
    run, _, _ = generated
    output = run.stdout + run.stderr

    assert run.returncode == 0, output
    assert not LEFT_OUT.search(output), output


def test_every_operation_has_its_module_in_the_generated_client(generated):
    _, package, document = generated
    expected = {Path("api", _snake(operation["tags"][0]), f"{_snake(operation['operationId'])}.py"): (path, method)
                for path, method, operation in _operations(document)}

    modules = {module.relative_to(package) for module in (package / "api").glob("*/*.py")
               if module.name != "__init__.py"}

    assert modules == set(expected)
    for module, (path, method) in expected.items():
        source = (package / module).read_text()
        assert f'"method": "{method}"' in source, module
        assert f'"url": "{path}"' in source, module


def test_generated_client_sends_create_vm_as_the_api_reads_it(generated, monkeypatch):
    _, package, _ = generated
    monkeypatch.syspath_prepend(str(package.parent))
    try:
        models = importlib.import_module(f"{PACKAGE}.models")
        body = models.CreateReplicaRequest(create_vm=True).to_dict()
    finally:
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]

    assert body["create_vm"] is True
    assert validate(CREATE_REPLICA, body)["create_vm"] is True
