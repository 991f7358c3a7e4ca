"""A VM for the boot test: the cached Debian root file system booted by systemd-nspawn, as a VM boots its image.

- Its disk is an overlay on the cached root file system: what a boot writes stays on it across a power-off and
  a boot again (what a hibernation and a wake do to a Hyperstack VM), and is thrown away by `destroy()`.
- Its user_data is a NoCloud seed, so cloud-init runs it as it runs Hyperstack's: once, on the first boot.
- systemd is PID 1 (`-b`); the host has no machined (`--register=no`) and no systemd (`--keep-unit`).
- Its network is a veth pair with link-local addresses (`address` inside, `host_address` outside), so
  connections from this host enter it from outside and pass its PREROUTING chain, as the proxy's enter a VM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

_SEED = "var/lib/cloud/seed/nocloud"
_ADDRESS_DROP_IN = "etc/systemd/network/50-host0.network.d/60-address.conf"
_names = iter(range(1, 10_000))
_subnets_taken: set[int] = set()  # by machines of this process not booted yet


class Machine:
    """A VM with a disk of its own, booted and powered off any number of times, then destroyed."""

    def __init__(self, rootfs: Path, user_data: str, *, files: dict[str, str] | None = None) -> None:
        number = next(_names)
        self.name = f"llm{os.getpid() % 10_000}v{number}"  # ve-<name> must fit in an interface name
        subnet = _free_subnet()
        self.address, self.host_address = f"169.254.{subnet}.2", f"169.254.{subnet}.1"
        self._dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/var/tmp"))
        self.root = self._dir / "root"
        self.console_log = self._dir / "console.log"
        for folder in ("upper", "work", "root"):
            (self._dir / folder).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={rootfs},upperdir={self._dir / 'upper'},workdir={self._dir / 'work'}",
                        str(self.root)], check=True)
        self._write(f"{_SEED}/meta-data", f"instance-id: {self.name}\nlocal-hostname: {self.name}\n")
        self._write(f"{_SEED}/user-data", user_data, mode=0o600)
        self._write(_ADDRESS_DROP_IN, f"[Network]\nAddress={self.address}/30\n")
        for relative, text in (files or {}).items():
            self._write(relative, text, mode=0o755)
        self._nspawn: subprocess.Popen | None = None

    def boot(self) -> Machine:
        """Powers the machine on and returns while it boots (a VM is ACTIVE before its user_data has run)."""
        if self.running:
            return self
        with open(self.console_log, "ab") as console:
            self._nspawn = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "-D", str(self.root), "-M", self.name, "-b", "--register=no",
                 "--keep-unit", "--network-veth", "--console=read-only"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        threading.Thread(target=self._link_host_side, name=f"{self.name}-link", daemon=True).start()
        return self

    @property
    def running(self) -> bool:
        return self._nspawn is not None and self._nspawn.poll() is None

    def wait_booted(self, timeout: float = 120) -> str:
        """systemd's word once the boot is over ('running', or 'degraded' if a unit failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            # Until systemd has its bus up, systemctl cannot even ask: it answers nothing, or "offline".
            if self._leader() is not None:
                state = self.run("systemctl", "is-system-running", "--wait", timeout=timeout).stdout.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not finish booting:\n{self.console()}")

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`command` inside the machine, as root, in all its namespaces."""
        leader = self._leader()
        if leader is None:
            raise RuntimeError(f"{self.name} is not running")
        return subprocess.run(["nsenter", "-t", str(leader), "-a", *command], capture_output=True, text=True,
                              timeout=timeout)

    def poweroff(self, timeout: float = 60) -> None:
        """A clean power-off, as Hyperstack's hibernation does before it saves the disk."""
        leader = self._leader()
        if leader is not None:
            os.kill(leader, signal.SIGRTMIN + 4)  # systemd's "power off" signal
        if self._nspawn is not None:
            try:
                self._nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                self._nspawn.kill()
                self._nspawn.wait(10)
        self._nspawn = None

    def destroy(self) -> None:
        """Powered off, its disk thrown away."""
        self.poweroff()
        subprocess.run(["umount", str(self.root)], check=False)
        shutil.rmtree(self._dir, ignore_errors=True)

    def console(self) -> str:
        return self.console_log.read_text(errors="replace")[-4000:] if self.console_log.exists() else ""

    def _write(self, relative: str, text: str, mode: int = 0o644) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    def _leader(self) -> int | None:
        """The machine's PID 1 (on this host): systemd-nspawn's child."""
        if not self.running:
            return None
        children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return None
        return int(pids[0]) if pids else None

    def _link_host_side(self) -> None:
        """The host's end of the veth, once nspawn has made it."""
        link = f"ve-{self.name}"[:15]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.running:
            if subprocess.run(["ip", "link", "show", link], capture_output=True).returncode == 0:
                subprocess.run(["ip", "addr", "replace", f"{self.host_address}/30", "dev", link], check=False)
                subprocess.run(["ip", "link", "set", link, "up"], check=False)
                return
            time.sleep(0.05)


def _free_subnet() -> int:
    """A /30 of 169.254.0.0/16 that no interface of this host uses yet."""
    taken = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    for subnet in range(100 + os.getpid() % 50, 250):
        if f" 169.254.{subnet}." not in taken and subnet not in _subnets_taken:
            _subnets_taken.add(subnet)
            return subnet
    raise RuntimeError("no free link-local subnet")
