"""A private three-node RabbitMQ cluster on loopback ports, for the chaos tier's node-loss tests.

Each node is a RabbitNode (own name, ports, data, config from deploy/rabbitmq/rabbitmq.conf) with one
Erlang cookie shared through each node's HOME and Erlang distribution bound to 127.0.0.1; the second
and third join the first with `rabbitmqctl join_cluster`. Three Erlang VMs on a small machine shared
with other work boot slowly, so every wait here is generous.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

from tests.servers import RabbitNode, ServerUnavailable, rabbit_bin_dir

SIZE = 3
BOOT_TIMEOUT = 240.0  # one node's boot (or a join) on a loaded 2-core machine


class ClusterNode(RabbitNode):
    """A RabbitNode that can join others: a shared cookie and password, distribution on loopback only."""

    def __init__(self, base: Path, bin_dir: Path, name: str, password: str, cookie: str) -> None:
        base.mkdir(parents=True, exist_ok=True)
        super().__init__(base, bin_dir, name=name, password=password)
        cookie_file = base / ".erlang.cookie"  # HOME is the node's folder, for the server and rabbitmqctl alike
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)

    def env(self) -> dict[str, str]:
        loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        return {**super().env(), "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback}


class RabbitCluster:
    """`urls` (one per node, in node order), `url` (all of them, comma-separated), `kill(i)`, `heal()`."""

    def __init__(self, base: Path, bin_dir: Path, size: int = SIZE) -> None:
        cookie, password, stem = uuid.uuid4().hex.upper(), uuid.uuid4().hex, f"bfcluster-{os.getpid()}"
        self.nodes = [ClusterNode(base / f"node{i}", bin_dir, f"{stem}-{i}", password, cookie) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def start(self) -> None:
        """Boot every node (at once: most of a boot is waiting), then join the others to the first."""
        self._boot(self.nodes)
        for node in self.nodes[1:]:
            for args in (("stop_app",), ("join_cluster", self.nodes[0].node), ("start_app",)):
                self._ctl(node, *args)
        self.wait_running()

    def kill(self, index: int) -> None:
        """kill -9 of one node: no goodbye to clients or peers."""
        self.nodes[index].kill()

    def heal(self) -> None:
        """Restart every killed node (it rejoins by itself from its data) and wait for all to run."""
        dead = [node for node in self.nodes if not node.running]
        if dead:
            self._boot(dead)
            self.wait_running()

    def running_nodes(self) -> set[str]:
        for node in self.nodes:
            if node.running:
                done = node.ctl("cluster_status", "--formatter", "json", timeout=60)
                if done.returncode == 0:
                    return set(json.loads(done.stdout)["running_nodes"])
        return set()

    def wait_running(self, timeout: float = BOOT_TIMEOUT) -> None:
        wanted = {node.node for node in self.nodes}
        deadline = time.monotonic() + timeout
        while (running := self.running_nodes()) != wanted:
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"cluster nodes not running after {timeout:.0f}s: {sorted(wanted - running)}")
            time.sleep(1)

    def leaders(self, prefix: str) -> dict[str, str]:
        """Queue name -> the node leading it, for the queues whose names start with `prefix`."""
        for node in self.nodes:
            if node.running:
                done = node.ctl("list_queues", "name", "leader", "--formatter", "json", "-q", timeout=60)
                if done.returncode == 0:
                    rows = json.loads(done.stdout or "[]")
                    return {row["name"]: row["leader"] for row in rows if row["name"].startswith(prefix)}
        return {}

    def index_of(self, node_name: str) -> int:
        return [node.node for node in self.nodes].index(node_name)

    def close(self) -> None:
        """The nodes are throwaway: killed, not stopped one by one (a minority stopping waits on the rest)."""
        for node in self.nodes:
            node.kill()

    @staticmethod
    def _boot(nodes: list[ClusterNode]) -> None:
        errors: list[str] = []

        def boot(node: ClusterNode) -> None:
            try:
                node.start(BOOT_TIMEOUT)
            except (ServerUnavailable, OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{node.node}: {exc}")

        threads = [threading.Thread(target=boot, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise ServerUnavailable("; ".join(errors))

    @staticmethod
    def _ctl(node: ClusterNode, *args: str) -> None:
        done = node.ctl(*args, timeout=BOOT_TIMEOUT)
        if done.returncode:
            raise ServerUnavailable(f"rabbitmqctl {' '.join(args)} on {node.node} failed: {done.stderr.strip()[-400:]}")


def start_cluster(base: Path) -> RabbitCluster:
    bin_dir = rabbit_bin_dir()
    if bin_dir is None:
        raise ServerUnavailable("rabbitmq-server is not installed (the cluster tests need three private nodes)")
    cluster = RabbitCluster(base, bin_dir)
    try:
        cluster.start()
    except (ServerUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        cluster.close()
        raise ServerUnavailable(f"private RabbitMQ cluster did not start: {exc}") from None
    return cluster
