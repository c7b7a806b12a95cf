"""tagging.storage on local disk and a real S3 server (SeaweedFS), and the CLI's one-line
errors and table commands against that server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tagging import storage
from tagging.errors import ObjectExists, StorageError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> storage.Root:
    if request.param == "local":
        return storage.Root(tmp_path / "root")
    request.getfixturevalue("s3_env")
    return storage.Root(f"s3://tagging/storage-{uuid.uuid4().hex[:10]}")


def test_roots_join_like_paths():
    r = storage.Root("s3://bucket//a/b/")
    assert str(r) == "s3://bucket/a/b" and r.bucket == "bucket" and r.key == "a/b"
    assert str(r / "c" / "d.json") == "s3://bucket/a/b/c/d.json"
    assert r.parent == storage.Root("s3://bucket/a") and r.name == "b"
    with pytest.raises(StorageError, match="not a local path"):
        os.fspath(r)
    local = storage.Root("var/catalogue")
    assert os.fspath(local / "x") == "var/catalogue/x" and not local.is_remote
    with pytest.raises(StorageError, match="only local paths and s3://"):
        storage.Root("gs://bucket/x")


def test_objects(root):
    obj = root / "dir" / "a.bin"
    assert not storage.exists(obj) and storage.list_objects(root) == []
    storage.write_bytes(obj, b"one")
    storage.write_bytes(obj, b"two")  # replacing write
    assert storage.read_bytes(obj) == b"two" and storage.exists(obj)
    storage.write_bytes(root / "dir" / "b.bin", b"x", create_only=True)
    with pytest.raises(ObjectExists):
        storage.write_bytes(root / "dir" / "b.bin", b"y", create_only=True)
    assert [o.root.name for o in storage.list_objects(root)] == ["a.bin", "b.bin"]
    digest, identity = storage.sha256(obj)
    assert digest == hashlib.sha256(b"two").hexdigest()
    assert identity == storage.identity(obj)
    storage.write_bytes(obj, b"three")
    assert storage.identity(obj) != identity  # a replaced object is noticed
    storage.delete_prefix(root / "dir")
    assert storage.list_objects(root) == []


def test_parquet_is_written_whole_or_not_at_all(root):
    table = pa.table({"a": list(range(100))})
    obj = root / "t.parquet"
    with pytest.raises(RuntimeError), storage.atomic_writer(obj) as sink, \
            pq.ParquetWriter(sink, table.schema) as writer:
        writer.write_table(table)
        raise RuntimeError("the writer died")
    assert not storage.exists(obj)
    with storage.atomic_writer(obj) as sink, pq.ParquetWriter(sink, table.schema) as writer:
        writer.write_table(table)
    fs, path = storage.arrow_fs(obj)
    assert pq.read_table(path, filesystem=fs).equals(table)


def test_parquet_bytes_are_read_from_memory_arrow_owns():
    """A Parquet file held in memory: the table and its metadata, and Arrow keeps no
    reference to the caller's bytes (releasing a Python object on one of Arrow's threads
    takes the GIL, which aborts a process that is exiting)."""
    table = pa.table({"a": list(range(500)), "b": [b"photo"] * 500}).replace_schema_metadata(
        {"state": "{}"})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=50)
    data = sink.getvalue().to_pybytes()
    before = sys.getrefcount(data)
    for _ in range(20):
        read = storage.read_parquet_bytes(data, table.schema.remove_metadata())
        assert sys.getrefcount(data) == before
    assert read.equals(table) and read.schema.metadata == {b"state": b"{}"}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tagging.cli", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, **env, "COLUMNS": "200"})


def one_error_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out and out.count("error:") == 1, out
    for word in words:
        assert word in " ".join(out.split()), (word, out)


def test_cli_says_what_is_wrong_with_the_storage(s3_env):
    history = ("catalogue", "--catalogue", "s3://tagging/cat", "history")
    wrong = cli(*history, env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    one_error_line(wrong, "access denied", "AWS_SECRET_ACCESS_KEY")
    assert "not-the-secret" not in wrong.stdout + wrong.stderr
    one_error_line(cli("catalogue", "--catalogue", "s3://no-such-bucket/cat", "history",
                       env={}), "bucket 'no-such-bucket' does not exist")
    down = cli(*history, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    one_error_line(down, "cannot reach http://127.0.0.1:9")


EXIT = """
import sys
sys.path.insert(0, {repo!r})
from tagging import storage
from tests.test_table import publish, whole_day
root = storage.Root(sys.argv[1])
storage.write_bytes(root / "probe", b"x")
publish(root, "a")
assert whole_day(root) == {{"a"}}
"""


def test_obstore_and_deltalake_in_one_process_exit_cleanly(s3_env):
    """Seen before the fix: rc 134 at exit ("terminate called without an active
    exception") now and then, when a deltalake-made pyarrow dataset outlived the script."""
    for _ in range(5):
        root = f"s3://tagging/exit-{uuid.uuid4().hex[:8]}"
        proc = subprocess.run([sys.executable, "-c", EXIT.format(repo=str(REPO)), root],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "terminate" not in proc.stderr, proc.stderr


def test_cli_history_restore_and_changes(s3_env):
    from test_table import publish

    root = storage.Root(f"s3://tagging/cli-{uuid.uuid4().hex[:8]}")
    publish(root, "good")
    publish(root, "bad")
    args = ("catalogue", "--catalogue", str(root))
    out = cli(*args, "history", "--date", "2026-11-20", env={}).stdout
    assert "publish" in out and "good" in out and "bad" in out
    out = cli(*args, "restore", "--date", "2026-11-20", "--version", "1", env={}).stdout
    assert "new table version 3" in out
    out = cli(*args, "changes", "--since", "1", "--json", env={}).stdout
    assert '"2026-11-20": {"versions": [2, 3], "insert": 20, "delete": 20}' in out
    assert '"latest": 3' in out
