"""`melset export --to URL`: exports uploaded to object storage (moto's S3 server on 127.0.0.1),
read back by their own libraries over the same URLs, never seen half-written, and storage
failures told in one sentence."""

from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from click.testing import CliRunner

from conftest import needs_s3, run_melset
from melset import export as exports
from melset.cli import main
from melset.errors import MelsetError, UsageError
from melset.exportdir import MARKER
from melset.location.upload import WORK_PREFIX, WORK_RECORD, Remote
from melset.store import Store

pytestmark = [pytest.mark.slow, needs_s3]

BUCKET = "exports"


def keys(s3, prefix: str) -> dict[str, bytes]:
    """Every object under bucket/prefix/: relative key -> bytes."""
    c = s3.client()
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            body = c.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            out[obj["Key"][len(prefix) + 1 :]] = body
    return out


def options(s3) -> dict:
    return {"endpoint_url": s3.endpoint}


def one_sentence(proc, *words: str) -> str:
    """A CompletedProcess or a CliRunner result: exit 2, one line on stderr, no traceback."""
    code = proc.returncode if hasattr(proc, "returncode") else proc.exit_code
    assert code == 2, (code, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("melset: error: ") and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def wds_samples(urls: list[str]) -> list[dict]:
    """The samples of the shards at `urls`, as the docs page reads them: webdataset opening
    s3:// through fsspec (a gopen handler)."""
    import fsspec
    import webdataset as wds

    def fsspec_open(url, mode="rb", bufsize=8192, **kw):
        return fsspec.open(url, mode).open()

    wds.gopen_schemes["s3"] = fsspec_open
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def shard_urls(url: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return sorted(fs.unstrip_protocol(p) for p in fs.glob(root + "/*.tar"))


def test_hf_export_to_s3_loads_with_the_rows_of_a_local_one(sample_store, tmp_path, s3):
    datasets = pytest.importorskip("datasets")
    s3.client().create_bucket(Bucket=BUCKET)
    url = f"s3://{BUCKET}/sets/hf"
    # the endpoint comes from --storage-option, the environment's points nowhere
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = run_melset(
        "export",
        sample_store,
        "--format",
        "hf",
        "--to",
        url,
        "--storage-option",
        f"endpoint_url={s3.endpoint}",
        env=env,
    )
    assert url in proc.stdout and f"{url}/README.md" in proc.stdout  # where it wrote
    exports.hf(Store(sample_store), tmp_path / "local")
    local = datasets.load_from_disk(str(tmp_path / "local"))
    remote = datasets.load_from_disk(url, storage_options=options(s3))
    assert sorted(remote) == sorted(local)
    for split in local:
        assert remote[split].features == local[split].features
        assert remote[split].to_dict() == local[split].to_dict(), split
    objects = keys(s3, "sets/hf")
    assert MARKER in objects and not [k for k in objects if k.startswith(WORK_PREFIX)]
    assert f"load_from_disk('{url}')" in objects["README.md"].decode()


def test_webdataset_and_seed_pickles_to_s3_read_back_and_a_reexport_replaces_only_its_own(sample_store, tmp_path, s3):
    s3.client().create_bucket(Bucket=BUCKET)
    store = Store(sample_store)
    url = f"s3://{BUCKET}/wds"
    exports.webdataset(store, url, shard_size=1)
    many = {k for k in keys(s3, "wds") if k.endswith(".tar")}
    exports.webdataset(store, url, shard_size=2)
    exports.webdataset(store, tmp_path / "w", shard_size=2)
    local = {p.name: p.read_bytes() for p in (tmp_path / "w").iterdir()}
    objects = keys(s3, "wds")
    # the same files, byte for byte (the record names the local build's store alike); the
    # earlier export's extra shards are gone
    assert sorted(objects) == sorted(local) and len(many) > len([k for k in objects if k.endswith(".tar")])
    assert all(objects[k] == local[k] for k in local if k.endswith(".tar"))
    urls = shard_urls(url)
    got = wds_samples(urls)
    assert len(got) == len(store.ok_rows()) and all(s["__url__"].startswith("s3://") for s in got)
    want = wds_samples(sorted(str(p) for p in (tmp_path / "w").glob("*.tar")))
    assert [(s["__key__"], s["npy"], s["json"]) for s in got] == [(s["__key__"], s["npy"], s["json"]) for s in want]

    # seed-pickles through the library call, read with fsspec
    import fsspec

    purl = f"s3://{BUCKET}/pickles"
    n = exports.seed_pickles(store, purl, options(s3))
    exports.seed_pickles(store, tmp_path / "p")
    with fsspec.open(f"{purl}/y.pickle", "rb", **options(s3)) as f:
        y = pickle.load(f)
    assert y.keys() == pickle.loads((tmp_path / "p" / "y.pickle").read_bytes()).keys()
    name = sorted(os.listdir(tmp_path / "p" / "pickles"))[0]
    with fsspec.open(f"{purl}/pickles/{name}", "rb", **options(s3)) as f:
        x = pickle.load(io.BytesIO(f.read()))
    assert np.array_equal(x, np.load(tmp_path / "p" / "pickles" / name, allow_pickle=True))
    assert len([k for k in keys(s3, "pickles") if k.startswith("pickles/")]) == n["pickles"]


def test_a_target_holding_objects_melset_did_not_write_is_refused(sample_store, s3):
    c = s3.client()
    c.create_bucket(Bucket=BUCKET)
    store = Store(sample_store)
    c.put_object(Bucket=BUCKET, Key="mine/notes.txt", Body=b"mine")
    with pytest.raises(UsageError, match="holds no melset export"):
        exports.webdataset(store, f"s3://{BUCKET}/mine")
    exports.webdataset(store, f"s3://{BUCKET}/w")
    before = keys(s3, "w")
    c.put_object(Bucket=BUCKET, Key="w/notes.txt", Body=b"mine")
    with pytest.raises(UsageError, match="notes.txt, which no melset export wrote"):
        exports.webdataset(store, f"s3://{BUCKET}/w")
    c.delete_object(Bucket=BUCKET, Key="w/notes.txt")
    c.put_object(Bucket=BUCKET, Key=f"w/{WORK_PREFIX}1-abcd/x.tar", Body=b"not melset's: no work record")
    with pytest.raises(UsageError, match=f"{WORK_PREFIX}1-abcd/x.tar, which no melset export wrote"):
        exports.webdataset(store, f"s3://{BUCKET}/w")
    after = keys(s3, "w")
    assert after.pop(f"{WORK_PREFIX}1-abcd/x.tar") and after == before
    with pytest.raises(UsageError, match="holds a webdataset export"):
        exports.seed_pickles(store, f"s3://{BUCKET}/w")


KILL_MID_SWAP = """
import os, sys
from melset.location import upload
copy = upload.Remote.copy
def copy_then_die(self, src, dst):
    copy(self, src, dst)
    os._exit(9)  # killed outright after the first file is in place: no cleanup runs
upload.Remote.copy = copy_then_die
from melset.cli import main
main(sys.argv[1:])
"""


def test_an_upload_killed_mid_swap_is_finished_by_the_next_export(sample_store, s3):
    s3.client().create_bucket(Bucket=BUCKET)
    url = f"s3://{BUCKET}/w"
    exports.webdataset(Store(sample_store), url, shard_size=1)
    args = ["export", str(sample_store), "--format", "webdataset", "--to", url]
    proc = subprocess.run([sys.executable, "-c", KILL_MID_SWAP, *args], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    left = keys(s3, "w")
    assert MARKER not in left and any(k.startswith(WORK_PREFIX) for k in left)  # the record is written last
    run_melset(*args)  # the leftover's work record says what is melset's: replaced, not refused
    objects = keys(s3, "w")
    assert MARKER in objects and not [k for k in objects if k.startswith(WORK_PREFIX)]
    assert len(wds_samples(shard_urls(url))) == len(Store(sample_store).ok_rows())


SLOW_UPLOAD = """
import sys, time
from melset.location import upload
put = upload.Remote.put_file
def slow_put(self, local, rel):
    put(self, local, rel)
    open(sys.argv[1], "a").close()
    time.sleep(0.3)
upload.Remote.put_file = slow_put
from melset.cli import main
main(sys.argv[2:])
"""


def test_sigterm_mid_upload_leaves_the_earlier_export_and_no_work_prefix(sample_store, tmp_path, s3):
    # (Ctrl-C takes the same way: the command turns SIGTERM into a KeyboardInterrupt)
    s3.client().create_bucket(Bucket=BUCKET)
    url = f"s3://{BUCKET}/w"
    exports.webdataset(Store(sample_store), url)
    before = keys(s3, "w")
    flag = tmp_path / "uploading"
    args = ["export", str(sample_store), "--format", "webdataset", "--to", url, "--shard-size", "1"]
    p = subprocess.Popen([sys.executable, "-c", SLOW_UPLOAD, str(flag), *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "Traceback" not in err, (p.returncode, err)
    assert keys(s3, "w") == before  # no new record, no work prefix: the earlier export as it was


def test_storage_failures_are_one_sentence(sample_store, s3, monkeypatch):
    import s3fs

    def export(to, *more, env=None):
        env = dict(env or os.environ)
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        args = ["export", str(sample_store), "--format", "seed-pickles", "--to", to, *more]
        return CliRunner().invoke(main, args)

    one_sentence(export(f"s3://nobucket-{os.getpid()}/x"), "the bucket nobucket-", "does not exist")
    one_sentence(export("gs://bucket/x"), "melset[gcs]")
    one_sentence(export(f"s3://{BUCKET}/x", "--storage-option", "novalue"), "--storage-option", "KEY=VALUE")
    from s3server import free_port

    t = time.monotonic()
    dead = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    one_sentence(export(f"s3://{BUCKET}/x", env=dead), "does not answer")
    assert time.monotonic() - t < 60
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    bare.update(
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent", AWS_EC2_METADATA_DISABLED="true"
    )
    one_sentence(export(f"s3://{BUCKET}/x", env=bare), "no credentials")


def test_access_denied_is_a_sentence(s3, monkeypatch):
    remote = Remote(f"s3://{BUCKET}/x", {})

    def refuse(*a, **k):
        raise PermissionError("AccessDenied: Access Denied")

    monkeypatch.setattr(remote.fs, "find", refuse)
    with pytest.raises(MelsetError, match="access denied"):
        remote.objects()
    assert WORK_RECORD == "melset-upload.json"
