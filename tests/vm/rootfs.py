"""A Debian 12 root file system to boot replicas' user_data in: built once with debootstrap, then cached.

What a Hyperstack GPU image brings that the boot script relies on: systemd, cloud-init (NoCloud here, as the
seed comes from a file rather than Hyperstack's metadata service), nginx, iptables, python3, curl. Nothing else
is added to the image but what stands in for the GPU's world: a `docker` command that is there (so the script
installs nothing from the network) but runs nothing, since no container engine runs here.

The cache is keyed by the recipe below, so changing it builds a new one. `python -m tests.vm.rootfs` builds it
ahead of a test run (`make vm-rootfs`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# debootstrap does not resolve virtual packages: python3-cryptography (cloud-init's, through oauthlib) needs
# python3-cffi-backend's `python3-cffi-backend-api-*`, named here or left unconfigured.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "cloud-init", "python3-cffi-backend", "nginx", "iptables",
            "python3", "iproute2", "curl", "ca-certificates")
CACHE = Path(os.environ.get("VM_ROOTFS_CACHE", "/var/cache/hyperstack-llm-proxy/vm-rootfs"))

# The image's own configuration, not the script's: how its datasource and network are found.
IMAGE_FILES = {
    # Hyperstack's images read OpenStack's metadata; here the seed is a directory. The network is the
    # harness's (a veth with a link-local address, below), so cloud-init leaves it alone. minbase has
    # no locale data, and the default en_US.UTF-8 would fail cloud-init's locale module.
    "etc/cloud/cloud.cfg.d/90-boot-test.cfg": (
        "datasource_list: [ NoCloud, None ]\n"
        "network: {config: disabled}\n"
        "locale: C.UTF-8\n"
    ),
    "etc/systemd/network/50-host0.network": (
        "[Match]\nName=host0\n\n[Network]\nLinkLocalAddressing=no\n"
        "# The address is written per boot into 60-address.conf beside this file.\n"
    ),
    "etc/default/locale": "LANG=C.UTF-8\n",
    # No container engine runs here, and no GPU: a `docker` that exists keeps the script from installing
    # one from the network, and says so if anything calls it.
    "usr/local/bin/docker": "#!/bin/sh\necho \"docker is a stand-in in the boot test: $*\" >&2\nexit 1\n",
}
_RECIPE = repr((SUITE, PACKAGES, sorted(IMAGE_FILES.items()), "systemd-networkd"))


def cached_rootfs() -> Path:
    """The cached root file system, built first if it is not there yet (a few minutes, once)."""
    target = CACHE / hashlib.sha256(_RECIPE.encode()).hexdigest()[:16]
    if (target / "etc" / "os-release").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if not (target / "etc" / "os-release").exists():
            _build(target)
    return target


def _build(target: Path) -> None:
    building = Path(tempfile.mkdtemp(prefix="building-", dir=CACHE))
    try:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                        str(building), MIRROR], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["chroot", str(building), "dpkg", "--audit"], check=True)
        for relative, text in IMAGE_FILES.items():
            path = building / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (building / "usr/local/bin/docker").chmod(0o755)
        subprocess.run(["chroot", str(building), "systemctl", "enable", "systemd-networkd"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        building.rename(target)  # whole or not at all: a build cut short is never taken for the cache
    finally:
        shutil.rmtree(building, ignore_errors=True)


if __name__ == "__main__":
    print(cached_rootfs())
    sys.exit(0)
