"""Separate "hosts" on one machine: Linux network namespaces (`ip netns`) joined by a bridge.

Each host is a network namespace with one veth link to a bridge that lives in a "switch"
namespace of its own. The root namespace (the test process, its HTTP clients) gets one more
link to that bridge, so it reaches every host by address, as a client on the same network
would. Addresses come from a private 10.x.y.0/24 that no route or address of the root
namespace covers; nothing has a default route, so nothing is routed off the machine.

Names carry a random tag, so parallel runs never clash. :meth:`Network.destroy` deletes the
namespaces, and every veth goes with them (one end of each lives in the switch namespace).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

IP = shutil.which("ip") or "ip"


def unavailable() -> str | None:
    """Why network namespaces cannot be created here (None: they can)."""
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2) to create network namespaces"
    if os.geteuid() != 0:
        return (
            "needs root to create network namespaces (CAP_NET_ADMIN, CAP_SYS_ADMIN): run "
            "sudo -E .venv/bin/python -m pytest tests/integration/test_separate_hosts.py"
        )
    return None


def ip(*args: str) -> str:
    """Run ``ip <args>``; its output. RuntimeError with ip's message when it fails."""
    try:
        return subprocess.run(
            [IP, *args], check=True, capture_output=True, text=True, timeout=30
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"ip {' '.join(args)}: {exc.stderr.strip()}") from None


def taken_networks() -> Iterator[ipaddress.IPv4Network]:
    """The IPv4 networks the root namespace routes or has addresses in."""
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        if route.get("dst") not in (None, "default"):
            yield ipaddress.ip_network(route["dst"], strict=False)
    for link in json.loads(ip("-j", "-4", "address", "show") or "[]"):
        for address in link.get("addr_info", []):
            yield ipaddress.ip_network(f"{address['local']}/{address['prefixlen']}", strict=False)


def free_subnet(attempts: int = 100) -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that overlaps nothing the root namespace knows."""
    taken = list(taken_networks())
    for _ in range(attempts):
        subnet = ipaddress.ip_network(f"10.{random.randint(64, 254)}.{random.randint(0, 255)}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    address: str

    @property
    def run(self) -> list[str]:
        """The command prefix that runs a command on this host."""
        return [IP, "netns", "exec", self.netns]


class Network:
    """Hosts named ``names`` on one bridge, the root namespace on it too (:attr:`address`)."""

    def __init__(self, names: Iterable[str]):
        tag = secrets.token_hex(3)
        self.subnet = free_subnet()
        addresses = [str(a) for a in self.subnet.hosts()]
        self.address = addresses[0]  # the root namespace's
        self.switch = f"mlops-{tag}-switch"
        self.root_link = f"mlops{tag}"  # the one name created in the root namespace
        self.hosts = {
            name: Host(name, f"mlops-{tag}-{name}", addresses[i + 1])
            for i, name in enumerate(names)
        }

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def create(self) -> Network:
        """Every namespace, link and address; what was made is deleted again if one step fails."""
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self

    def _create(self) -> None:
        prefix = self.subnet.prefixlen
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "bridge", "type", "bridge")
        ip("-n", self.switch, "link", "set", "bridge", "up")
        for host in self.hosts.values():
            ip("netns", "add", host.netns)
            ip("-n", host.netns, "link", "set", "lo", "up")
            ip("-n", self.switch, "link", "add", host.name, "type", "veth",
               "peer", "name", "eth0", "netns", host.netns)  # fmt: skip
            ip("-n", self.switch, "link", "set", host.name, "master", "bridge", "up")
            ip("-n", host.netns, "address", "add", f"{host.address}/{prefix}", "dev", "eth0")
            ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("link", "add", self.root_link, "type", "veth",
           "peer", "name", "root", "netns", self.switch)  # fmt: skip
        ip("-n", self.switch, "link", "set", "root", "master", "bridge", "up")
        ip("address", "add", f"{self.address}/{prefix}", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")

    def cut(self, host: str, other: str) -> None:
        """``host`` can no longer reach ``other`` (a route that answers "unreachable")."""
        ip("-n", self[host].netns, "route", "add", "unreachable", f"{self[other].address}/32")

    def destroy(self) -> None:
        """Delete every namespace of this network (and so its links); never fails."""
        for netns in [*(h.netns for h in self.hosts.values()), self.switch]:
            subprocess.run([IP, "netns", "delete", netns], capture_output=True, check=False)
        subprocess.run([IP, "link", "delete", self.root_link], capture_output=True, check=False)
