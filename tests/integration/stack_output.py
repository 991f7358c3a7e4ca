"""The local stack's output, read as it comes by a thread of its own.

The stack prints a metrics line (or a few) per request: read by nobody, a pipe fills after a few dozen
requests and the stack blocks on its next print. Tests read it as they would the pipe (`readline`,
iteration, `read` to the end) or take every line printed so far (`lines`), whatever they read before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import IO


class StackOutput:
    def __init__(self, pipe: IO[str]) -> None:
        self._pipe = pipe
        self._lines: list[str] = []
        self._read = 0  # lines handed out by readline, iteration and read
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._drain, name="stack-output", daemon=True).start()

    def lines(self) -> list[str]:
        """Every line printed so far, without its line end."""
        with self._changed:
            return [line.rstrip("\n") for line in self._lines]

    def readline(self) -> str:
        """The next line, or "" once the stack has ended and every line was read."""
        with self._changed:
            self._changed.wait_for(lambda: self._read < len(self._lines) or self._ended)
            if self._read == len(self._lines):
                return ""
            self._read += 1
            return self._lines[self._read - 1]

    def __iter__(self) -> Iterator[str]:
        while line := self.readline():
            yield line

    def read(self) -> str:
        """What is left, once the stack has ended."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended)
            rest, self._read = self._lines[self._read :], len(self._lines)
            return "".join(rest)

    def close(self) -> None:
        self._pipe.close()

    def _drain(self) -> None:
        try:
            for line in self._pipe:
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        except ValueError:  # closed by close()
            pass
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()
