"""The S3 test server itself: real SeaweedFS, loopback only, signed requests, conditional
writes (what the registry and the Delta table rely on), stopped by PID."""

from __future__ import annotations

from pathlib import Path

import obstore
import psutil
import pytest
from obstore.exceptions import AlreadyExistsError, PermissionDeniedError
from obstore.store import S3Store

from tagging.ops.s3server import REGION, S3Server


def store(server: S3Server, *, secret: str | None = None) -> S3Store:
    return S3Store("tagging", endpoint=server.endpoint, access_key_id=server.access_key,
                   secret_access_key=secret or server.secret_key, region=REGION,
                   client_options={"allow_http": True})


def test_listens_on_loopback_only(s3_server):
    listeners = [c for c in psutil.Process(s3_server.process.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN]
    assert listeners
    assert {c.laddr.ip for c in listeners} == {"127.0.0.1"}


def test_create_only_write_has_one_winner(s3_server):
    s = store(s3_server)
    obstore.put(s, "probe/once", b"first", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(s, "probe/once", b"second", mode="create")
    assert obstore.get(s, "probe/once").bytes() == b"first"


def test_wrong_secret_is_refused(s3_server):
    with pytest.raises(PermissionDeniedError):
        obstore.put(store(s3_server, secret="wrong"), "probe/denied", b"x")


def test_stop_leaves_no_process_and_nothing_in_tmp(tmp_path):
    server = S3Server(tmp_path).start()
    pid = server.process.pid
    ours = {str(p) for p in server.ports.values()}
    assert any(s.stem.rsplit("-", 1)[-1] in ours for s in Path("/tmp").glob("seaweedfs-*.sock"))
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # its sockets (weed's fixed default is /tmp) are gone; its logs are in its workdir
    assert not [s for s in Path("/tmp").glob("seaweedfs-*.sock")
                if s.stem.rsplit("-", 1)[-1] in ours]
    assert list(tmp_path.glob("weed.*"))
