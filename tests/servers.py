"""Private servers for integration and chaos tests: a RabbitMQ node and a moto S3 endpoint on free ports."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest

from common.storage import StorageOptions

REPO = Path(__file__).resolve().parents[1]
DEPLOY_CONF = REPO / "deploy" / "rabbitmq" / "rabbitmq.conf"
TEST_USER = "bftest"
# deploy settings the private node replaces: its own listener, user, small-disk limit and log
OVERRIDDEN = ("listeners.", "ssl_options.", "loopback_users", "disk_free_limit.", "log.")
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class ServerUnavailable(Exception):
    """This machine cannot run the server: not installed, or it failed to boot."""


def unavailable(reason: str) -> NoReturn:
    """Skip on a laptop; under CI a missing server is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc.poll() is not None:
            raise ServerUnavailable(f"server exited with {proc.returncode}; see {log}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"server did not open port {port} within {timeout:.0f}s; see {log}")
        time.sleep(0.1)


def wait_closed(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 20) -> None:
    """Terminate a server started in its own session, then kill what is left of its group."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(10)


class Pki:
    """A throwaway CA with a server certificate (localhost, 127.0.0.1) and a client certificate."""

    def __init__(self, base: Path) -> None:
        self.ca = base / "ca.pem"
        self.server_cert, self.server_key = base / "server.pem", base / "server.key"
        self.client_cert, self.client_key = base / "client.pem", base / "client.key"

    @classmethod
    def create(cls, base: Path) -> Pki | None:
        """None when the cryptography package is missing (TLS tests then skip)."""
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import ExtendedKeyUsageOID as Usage
        except ImportError:
            return None
        import ipaddress

        pki = cls(base)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        _issue("batchfleet test CA", ca_key, ca_key, [], pki.ca, None)
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        server = [x509.SubjectAlternativeName(names), x509.ExtendedKeyUsage([Usage.SERVER_AUTH])]
        _issue(
            "localhost",
            ec.generate_private_key(ec.SECP256R1()),
            ca_key,
            server,
            pki.server_cert,
            pki.server_key,
        )
        client = [x509.ExtendedKeyUsage([Usage.CLIENT_AUTH])]
        _issue("bftest", ec.generate_private_key(ec.SECP256R1()), ca_key, client, pki.client_cert, pki.client_key)
        return pki


def _issue(subject: str, key: Any, ca_key: Any, extensions: list[Any], cert_path: Path, key_path: Path | None) -> None:
    """Sign a certificate with ca_key (self-signed CA when key is ca_key) and write it as PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name("batchfleet test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=key is ca_key, path_length=None), critical=True)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    if key_path is not None:
        plain = serialization.NoEncryption()
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, plain))


# RabbitMQ


def rabbit_bin_dir() -> Path | None:
    """Where rabbitmq-server and rabbitmqctl live (not Debian's /usr/sbin wrappers: they su to rabbitmq)."""
    candidates = [os.environ.get("BATCHFLEET_RABBITMQ_BIN", ""), "/usr/lib/rabbitmq/bin"]
    found = shutil.which("rabbitmq-server")
    if found:
        candidates.append(str(Path(found).parent))
    for candidate in filter(None, candidates):
        if (Path(candidate) / "rabbitmq-server").exists() and (Path(candidate) / "rabbitmqctl").exists():
            return Path(candidate)
    return None


def rabbit_config(port: int, password: str, tls_port: int | None = None, pki: Pki | None = None) -> str:
    """deploy/rabbitmq/rabbitmq.conf (consumer_timeout, heartbeat, quorum) plus the test node's own."""
    kept = []
    for line in DEPLOY_CONF.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if line.strip() and not line.lstrip().startswith("#") and not key.startswith(OVERRIDDEN):
            kept.append(line)
    kept += [
        f"listeners.tcp.default = 127.0.0.1:{port}",
        f"default_user = {TEST_USER}",
        f"default_pass = {password}",
        "disk_free_limit.absolute = 50MB",
        "log.file.level = info",
    ]
    if tls_port and pki:
        kept += [
            f"listeners.ssl.default = 127.0.0.1:{tls_port}",
            f"ssl_options.cacertfile = {pki.ca}",
            f"ssl_options.certfile = {pki.server_cert}",
            f"ssl_options.keyfile = {pki.server_key}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = false",
        ]
    return "\n".join(kept) + "\n"


class RabbitNode:
    """A throwaway rabbitmq-server node: own name, ports, data, cookie (HOME) and config."""

    restartable = True

    def __init__(self, base: Path, bin_dir: Path, name: str | None = None, password: str | None = None) -> None:
        self.base = base
        self.bin_dir = bin_dir
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"{name or f'bftest-{os.getpid()}'}@localhost"
        self.password = password or uuid.uuid4().hex
        self.url = f"amqp://{TEST_USER}:{self.password}@127.0.0.1:{self.port}/"
        self.pki = Pki.create(base)
        self.tls_port = free_port() if self.pki else None
        # amqps on 127.0.0.1 with the test CA; None without the cryptography package
        self.tls_url = f"amqps://{TEST_USER}:{self.password}@127.0.0.1:{self.tls_port}/" if self.pki else None
        self.log = base / "server.out"
        self._proc: subprocess.Popen[bytes] | None = None
        (base / "rabbitmq.conf").write_text(rabbit_config(self.port, self.password, self.tls_port, self.pki))
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")

    def env(self) -> dict[str, str]:
        base = str(self.base)
        return {
            **os.environ,
            "HOME": base,  # the Erlang cookie lives here, for the node and rabbitmqctl alike
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
        }

    @property
    def pid(self) -> int | None:
        """The rabbitmq-server process (beam.smp runs below it), while started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90) -> None:
        if self.running:
            return
        wait_closed(self.port, 30)  # a killed predecessor may still hold the listener for a moment
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "rabbitmq-server")],
                env=self.env(),
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(self.port, timeout, self._proc, self.log)
        deadline = time.monotonic() + timeout
        # await_startup gives up at once while the node is not yet registered with epmd: ask again
        while (done := self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)).returncode:
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise ServerUnavailable(f"rabbitmqctl await_startup failed: {done.stderr.strip()[-500:]}")
            time.sleep(0.3)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        """A clean shutdown (clients see CONNECTION_FORCED), like `systemctl stop rabbitmq-server`."""
        if not self.running:
            return
        self.ctl("stop", timeout=60)
        stop_process(self._proc)

    def kill(self) -> None:
        """A crash: the node vanishes without closing anything."""
        if self._proc is not None and self.running:
            if hasattr(os, "killpg"):
                os.killpg(self._proc.pid, signal.SIGKILL)
            else:
                self._proc.kill()
            self._proc.wait(10)
            wait_closed(self.port, 30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            stop_process(self._proc, grace=5)


class ExternalRabbit:
    """A server named by BATCHFLEET_TEST_AMQP_URL: usable, but not ours to stop."""

    restartable = False
    tls_url: str | None = None
    pki: Pki | None = None

    def __init__(self, url: str) -> None:
        self.url = url

    def _refuse(self) -> None:
        unavailable("BATCHFLEET_TEST_AMQP_URL names an external server; stop/restart needs a private node")

    def start(self) -> None:
        self._refuse()

    def stop(self) -> None:
        self._refuse()

    def kill(self) -> None:
        self._refuse()

    def restart(self) -> None:
        self._refuse()

    def close(self) -> None:
        pass


def start_rabbitmq(base: Path) -> RabbitNode:
    bin_dir = rabbit_bin_dir()
    if bin_dir is None:
        raise ServerUnavailable("rabbitmq-server is not installed (set BATCHFLEET_TEST_AMQP_URL to use a server)")
    node = RabbitNode(base, bin_dir)
    try:
        node.start()
    except (ServerUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        node.close()
        raise ServerUnavailable(f"private RabbitMQ node did not start: {exc}") from None
    return node


# S3


class TcpProxy:
    """127.0.0.1:port forwarded to a target port; stop() makes the endpoint unreachable, start() heals it."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:  # the stopped listener lives until its accept() times out (0.2 s)
                if time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.05)
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="s3-proxy", daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a dead endpoint would."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            live = list(self._live)
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._live.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy one direction; each socket is closed by the thread that reads it."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._live.discard(src)
            src.close()


class MotoS3:
    """moto's S3 server in a subprocess, reached through a proxy so outages keep the data."""

    def __init__(self, base: Path, extra_env: dict[str, str] | None = None) -> None:
        self.base = base
        self.server_port = free_port()
        self.log = base / "moto.out"
        self.env = dict(AWS_TEST_ENV)
        self._extra_env = extra_env or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._proxy = TcpProxy(self.server_port)
        self.endpoint_url = f"http://127.0.0.1:{self._proxy.port}"

    @property
    def options(self) -> StorageOptions:
        return StorageOptions(endpoint_url=self.endpoint_url, region="us-east-1", path_style=True)

    def launch(self, timeout: float = 30) -> None:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.server_port)],
                env={**os.environ, **self.env, **self._extra_env},
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(self.server_port, timeout, self._proc, self.log)
        self._proxy.start()

    def stop(self) -> None:
        """Endpoint outage: connections refused and cut; objects survive for start()."""
        self._proxy.stop()

    def start(self) -> None:
        self._proxy.start()

    def client(self, service: str = "s3", key: str | None = None, secret: str | None = None) -> Any:
        """A boto3 client for this endpoint (the dummy test credentials unless key/secret are given)."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=key or self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=secret or self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        config = Config(s3={"addressing_style": "path"})
        return session.client(service, endpoint_url=self.endpoint_url, config=config)  # type: ignore[call-overload]

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one by default) and return its s3:// URI."""
        name = name or f"bf-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def close(self) -> None:
        self._proxy.stop()
        stop_process(self._proc, grace=5)


def start_moto(base: Path, extra_env: dict[str, str] | None = None) -> MotoS3:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise ServerUnavailable("moto[server] is not installed (pip install 'moto[server]')")
    server = MotoS3(base, extra_env)
    try:
        server.launch()
    except (ServerUnavailable, OSError) as exc:
        server.close()
        raise ServerUnavailable(f"moto S3 server did not start: {exc}") from None
    return server
