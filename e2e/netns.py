"""Three network namespaces joined by veth pairs, made and removed by the tests.

    [client ns] vc 10.200.1.2/30 ==veth== 10.200.1.1/30 vp [proxy ns] vq 10.200.2.1/30
                                                       ==veth== 10.200.2.2/30 vu [upstream ns]

Every address exists only inside these namespaces; nothing is added to the
host's own network namespace. A fault is a firewall rule inside the client
or upstream namespace that drops every packet (nft, or iptables if nft is
missing), so the link stays up and the proxy has to notice the silence by
itself (keepalive).

Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2; `available()` says
why not otherwise, and the tests skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CLIENT_IP, PROXY_C_IP = "10.200.1.2", "10.200.1.1"
PROXY_U_IP, UPSTREAM_IP = "10.200.2.1", "10.200.2.2"


def run(*argv: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def available() -> tuple[bool, str]:
    if sys.platform != "linux":
        return False, "network namespaces need Linux"
    if shutil.which("ip") is None:
        return False, "iproute2 (`ip`) is not installed"
    if shutil.which("nft") is None and shutil.which("iptables") is None:
        return False, "neither nft (nftables) nor iptables is installed"
    if os.geteuid() != 0:
        return False, f"not root (euid {os.geteuid()}): cannot create network namespaces"
    probe = f"wsp-probe-{os.getpid()}"
    r = run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return False, f"`ip netns add` failed (no CAP_SYS_ADMIN/CAP_NET_ADMIN?): {r.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return True, ""


class Topology:
    """client ns <-> proxy ns <-> upstream ns. Use as a context manager."""

    def __init__(self) -> None:
        s = f"{os.getpid() % 100000}"
        self.client, self.proxy, self.upstream = f"wsp-c-{s}", f"wsp-p-{s}", f"wsp-u-{s}"
        self.links = (f"wspc{s}", f"wspp{s}", f"wspq{s}", f"wspu{s}")
        self.created: list[str] = []

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def __enter__(self) -> "Topology":
        try:
            for ns in (self.client, self.proxy, self.upstream):
                # A leftover of an earlier run that died with this same PID.
                run("ip", "netns", "del", ns, check=False)
                run("ip", "netns", "add", ns)
                self.created.append(ns)
                run("ip", "-n", ns, "link", "set", "lo", "up")
            vc, vp, vq, vu = self.links
            # Both ends are created directly inside their namespaces.
            run("ip", "link", "add", vc, "netns", self.client, "type", "veth",
                "peer", "name", vp, "netns", self.proxy)
            run("ip", "link", "add", vq, "netns", self.proxy, "type", "veth",
                "peer", "name", vu, "netns", self.upstream)
            for ns, dev, addr in ((self.client, vc, CLIENT_IP), (self.proxy, vp, PROXY_C_IP),
                                  (self.proxy, vq, PROXY_U_IP), (self.upstream, vu, UPSTREAM_IP)):
                run("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        # Deleting a namespace deletes its veth end, which deletes the peer;
        # every process in it has been killed by the test before this.
        for ns in reversed(self.created):
            run("ip", "netns", "del", ns, check=False)
        self.created.clear()

    def drop_all(self, ns: str) -> str:
        """Drop every packet into and out of `ns` (except its loopback). Returns the tool used."""
        if shutil.which("nft"):
            rules = (
                "table inet wspulse_e2e {\n"
                " chain in { type filter hook input priority 0; policy accept; iif lo accept; drop; }\n"
                " chain out { type filter hook output priority 0; policy accept; oif lo accept; drop; }\n"
                "}\n")
            subprocess.run(self.exec_prefix(ns) + ["nft", "-f", "-"], input=rules, text=True,
                           check=True, timeout=10, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            return "nft"
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            run(*self.exec_prefix(ns), "iptables", "-A", chain, flag, "lo", "-j", "ACCEPT")
            run(*self.exec_prefix(ns), "iptables", "-A", chain, "-j", "DROP")
        return "iptables"
