"""The deployment zip as Lambda runs it (issue #22): unpacked as a task root, each function's handler imported
from it alone (plus what the Python runtime brings: boto3), and the chat function started through its
AWS_LAMBDA_EXEC_WRAPPER against a Runtime API on loopback.

The zip is built for arm64. Its few native wheels are swapped for this machine's builds of the same versions
(from PyPI, by pip), so that everything else is imported exactly as packaged: a module left out of the
package, or imported from the repository instead of the zip, fails here before it fails in AWS.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from moto.server import ThreadedMotoServer

from infra.local.mock_vllm import MockVllm
from tests.infra.conftest import REPO_ROOT
from tests.unit.chat.test_chat_events import function_url_event
from tests.unit.chat.test_lambda_runtime import FakeRuntimeApi

AARCH64 = 183  # ELF e_machine
# What the managed Python runtime provides besides the standard library (the zip need not carry them).
RUNTIME_PACKAGES = ("boto3", "s3transfer")
# Enough configuration for each module to import, as the stack's environment would give it.
FUNCTION_ENV = {"STAGE": "dev", "TABLE_PREFIX": "hyperstack-llm-proxy-dev", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused",
                "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # no AWS call is made; if one were, it fails fast


def _is_aarch64_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        header = handle.read(20)
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64


def _distribution_of(task_root: Path, member: Path) -> Path:
    """The .dist-info whose RECORD lists `member`."""
    relative = member.relative_to(task_root).as_posix()
    for record in task_root.glob("*.dist-info/RECORD"):
        with record.open() as handle:
            if any(row and row[0] == relative for row in csv.reader(handle)):
                return record.parent
    raise AssertionError(f"{relative}: no distribution in the zip lists it")


def _swap_for_this_machine(task_root: Path, dist_info: Path) -> str:
    """Remove the distribution's files; install this machine's wheel of the same version in their place."""
    metadata = dict(line.split(": ", 1) for line in (dist_info / "METADATA").read_text().splitlines()
                    if ": " in line and line.split(": ", 1)[0] in ("Name", "Version"))
    with (dist_info / "RECORD").open() as handle:
        files = [task_root / row[0] for row in csv.reader(handle) if row]
    for path in files:
        path.unlink(missing_ok=True)
    for folder in sorted({path.parent for path in files}, key=lambda folder: -len(folder.parts)):
        if folder != task_root and folder.exists() and not any(folder.rglob("*.*")):
            shutil.rmtree(folder)  # emptied: pip --target would otherwise keep it and skip the wheel
    shutil.rmtree(dist_info, ignore_errors=True)
    requirement = f"{metadata['Name']}=={metadata['Version']}"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--only-binary=:all:", "--target", str(task_root), requirement],
        capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, f"pip could not fetch {requirement}:\n{installed.stderr}"
    return requirement


@pytest.fixture(scope="module")
def task_root(package_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("lambda") / "task"
    with zipfile.ZipFile(package_dir / "deployment.zip") as archive:
        archive.extractall(root)
        for member in archive.infolist():  # as Lambda unpacks it: with each file's mode (zipfile drops them)
            mode = member.external_attr >> 16 & 0o777
            if mode and not member.is_dir():
                (root / member.filename).chmod(mode)
    natives = {_distribution_of(root, path) for path in root.rglob("*.so") if _is_aarch64_elf(path)}
    swapped = sorted(_swap_for_this_machine(root, dist_info) for dist_info in natives)
    runtime = root.parent / "runtime"  # the managed runtime's own packages, as /var/runtime holds them
    runtime.mkdir()
    site = Path(__import__("boto3").__file__).parents[1]
    for name in RUNTIME_PACKAGES:
        (runtime / name).symlink_to(site / name)
    yield {"root": root, "runtime": runtime, "swapped": swapped}


def _run_isolated(task: dict[str, Any], code: str, **environment: str) -> subprocess.CompletedProcess:
    """`code` in a python that sees the standard library, the task root and the runtime's packages, nothing else."""
    script = (f"import sys; sys.path[:0] = [{str(task['root'])!r}, {str(task['runtime'])!r}]\n" + code)
    env = {"PATH": os.environ.get("PATH", ""), **FUNCTION_ENV, **environment}
    return subprocess.run([sys.executable, "-S", "-c", script], cwd=task["root"].parent, env=env,
                          capture_output=True, text=True, timeout=120)


def test_only_the_native_wheels_are_swapped(task_root) -> None:
    names = {requirement.split("==")[0].lower().replace("_", "-") for requirement in task_root["swapped"]}
    assert names == {"cffi", "cryptography", "pydantic-core"}


def test_every_handler_imports_from_the_zip_alone(task_root, template: dict[str, Any]) -> None:
    handlers = sorted({resource["Properties"]["Handler"] for resource in template["Resources"].values()
                       if resource["Type"] == "AWS::Serverless::Function"})
    assert handlers == ["app.app", "app.chat", "app.idle_check", "app.provision", "app.reconcile",
                        "app.scale"]
    code = "\n".join([
        "import importlib",
        f"for handler in {handlers!r}:",
        "    module, name = handler.rsplit('.', 1)",
        "    assert callable(getattr(importlib.import_module(module), name)), handler",
        "import app, chalicelib",
        f"assert app.__file__.startswith({str(task_root['root'])!r}), app.__file__",
        f"assert chalicelib.__file__.startswith({str(task_root['root'])!r}), chalicelib.__file__",
        # What provision needs only when it runs: the SDK and the certificate maker, imported the same way.
        "import hyperstack, cryptography.x509, chalicelib.provisioning.replica_tls",
        "print('imported')",
    ])
    result = _run_isolated(task_root, code)
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr


def test_the_zip_holds_no_test_tool_or_local_stack(task_root) -> None:
    root = task_root["root"]
    for absent in ("moto", "pytest", "infra", "tests", "openai", "xllamacpp"):
        assert not (root / absent).exists(), f"{absent} is packaged"


@pytest.fixture
def stage_data(task_root) -> Iterator[dict[str, Any]]:
    """moto's DynamoDB with the stage's tables, a model served by a mock replica and a user's key, all written
    by the packaged code itself (the store's bootstrap and the admin logic, from the zip)."""
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)  # moto's state is one per process: start from none
    replica = MockVllm(model="zip/model", pace_seconds=0.01).start()
    try:
        seeded = _run_isolated(task_root, "\n".join([
            "from chalicelib.store.bootstrap import ensure_tables",
            "from chalicelib.admin import api_keys, llm_models, replicas",
            "ensure_tables()",
            "model = llm_models.create({'name': 'zip/model'})",
            f"replicas.create(model['id'], {{'endpoint': {replica.base_url!r}}})",
            "print(api_keys.generate({'user_id': 'zip'})['api_key'])",
        ]), AWS_ENDPOINT_URL=endpoint)
        assert seeded.returncode == 0, seeded.stderr
        yield {"endpoint": endpoint, "key": seeded.stdout.strip().splitlines()[-1]}
    finally:
        replica.stop()
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


def test_the_chat_function_streams_through_its_exec_wrapper_from_the_zip(task_root, stage_data, tmp_path) -> None:
    """The bootstrap Lambda would exec, from the unpacked zip: prelude, 8 NUL bytes, then the events as chunks."""
    bootstrap = task_root["root"] / "chalicelib" / "chat" / "bootstrap"
    assert os.access(bootstrap, os.X_OK), "the packaged bootstrap must be executable"
    body = json.dumps({"model": "zip/model", "stream": True, "max_tokens": 4,
                       "messages": [{"role": "user", "content": "Hi"}]}).encode()
    event = function_url_event(body)
    event["headers"]["authorization"] = f"Bearer {stage_data['key']}"
    # Lambda's interpreter has no site-packages of ours: this one is told to skip its own (-S).
    interpreter = tmp_path / "python3.11"
    interpreter.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    interpreter.chmod(0o755)
    api = FakeRuntimeApi()
    try:
        api.invoke(event)
        env = {"PATH": os.environ.get("PATH", ""), **FUNCTION_ENV, "AWS_ENDPOINT_URL": stage_data["endpoint"],
               "AWS_LAMBDA_RUNTIME_API": api.address, "LAMBDA_TASK_ROOT": str(task_root["root"]),
               "LAMBDA_RUNTIME_DIR": str(task_root["runtime"])}
        process = subprocess.Popen([str(bootstrap), str(interpreter), "/var/runtime/bootstrap.py"],
                                   cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            posted = api.response(timeout=60)
        finally:
            process.terminate()
            stdout, stderr = process.communicate(timeout=10)
    finally:
        api.close()
    log = (stdout + stderr).decode()
    assert posted.prelude()["statusCode"] == 200, log
    assert posted.prelude()["headers"]["content-type"].startswith("text/event-stream")
    events = [line for line in posted.payload().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and len(events) >= 3, events
    assert json.loads(events[0].removeprefix("data: "))["model"] == "zip/model"
    assert len(posted.chunks) >= 3, "the events came as one piece, not streamed"


def test_the_zip_is_what_the_repository_holds(task_root) -> None:
    for path in ("app.py", "chalicelib/chat/lambda_runtime.py", "chalicelib/chat/service.py"):
        assert (task_root["root"] / path).read_bytes() == (REPO_ROOT / path).read_bytes(), path
