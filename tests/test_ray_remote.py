"""A Ray cluster with no shared disk: the audio on S3, the store on the driver's disk only.

Two Ray nodes on 127.0.0.1, as close to two machines as one machine allows: a head with no
CPUs (so no task can run there) and a worker node started inside its own mount namespace
(`unshare --mount`), where tmpfs mounts hide the driver's paths: the folder that holds the
stores and the collections, and the shipped sample. There the store's path is either
absent or an empty folder. Workers read the audio from moto's S3 server and must send
every matrix back through Ray's object store; the driver writes it. The stores must be
byte-identical to the local engine's, nothing may appear under the hidden paths on the
worker node, and a driver killed with SIGKILL mid-run resumes to the same bytes.

Ray's temporary folders live in a short folder under /tmp (a Unix socket path has at most
107 bytes, and Ray puts its sockets three levels below its temp dir); it is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SAMPLE, SAMPLE_AUDIO, SAMPLE_TRACKS, make_collection, melset_cmd, needs_s3, run_melset
from melset.store import RowSink, SinkUnreachable, read_journal

BUCKET = "fma"
WORKER_CPUS = 2


def _can_unshare() -> str | None:
    """Why a private mount namespace with a tmpfs cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (a worker node in its own mount namespace, with tmpfs mounts over the driver's paths)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux) for a worker node in its own mount namespace"
    probe = tempfile.mkdtemp(prefix="melset-unshare-")
    try:
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", probe],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --mount does not work here ({exc})"
    finally:
        os.rmdir(probe)
    if proc.returncode != 0:
        return f"unshare --mount with a tmpfs does not work here ({proc.stderr.strip() or proc.returncode})"
    return None


_WHY_NOT = _can_unshare()

needs_unshare = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")

# `ray start` for a worker node swaps a loopback --address or --node-ip-address for the host's
# own address, unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, with which it refuses to start a
# worker node at all (multi-node clusters "not supported on Windows and OSX"). This starts it
# with that variable at 0 (every address stays 127.0.0.1) and lets `ray start`'s own check pass.
_WORKER_NODE = """
import sys, types
import ray._private.ray_constants as constants
import ray.scripts.scripts as scripts
view = types.ModuleType("ray_constants"); view.__dict__.update(vars(constants)); view.ENABLE_RAY_CLUSTER = True
scripts.ray_constants = view
sys.argv = ["ray", "start", *sys.argv[1:]]
scripts.main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(pid: int) -> list[int]:
    """The processes in the session that `pid` leads (Ray's daemons and its workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == pid and fields[0] != "Z":  # field 6 of stat: the session id
                found.append(int(entry))
    return found


def _stop(proc: subprocess.Popen) -> None:
    """Kill every process of a session started here, by id, until none is left (at most 20 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = _session(proc.pid)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


class Cluster:
    """A Ray head (0 CPUs) and a worker node in its own mount namespace, on 127.0.0.1."""

    def __init__(self, hidden: list[Path], empty: list[Path], env: dict[str, str]):
        self.temp = Path(tempfile.mkdtemp(prefix="melset-ray-"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.hidden, self.empty = hidden, empty
        # a token of its own in the environment: neither ~/.ray/auth_token nor another cluster's
        self.env = {
            **env,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": uuid.uuid4().hex,
        }
        self.env.pop("RAY_ADDRESS", None)
        self.procs: list[subprocess.Popen] = []

    def _start(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(self.temp / log, "wb") as out:
            proc = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=ROOT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Cluster:
        try:
            ray = [sys.executable, "-m", "ray.scripts.scripts"]
            common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
            common += ["--dashboard-agent-grpc-port", str(_free_port()), "--metrics-export-port", str(_free_port())]
            self._start(
                [*ray, "start", "--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard", "false",
                 "--temp-dir", str(self.temp / "h"), "--dashboard-agent-listen-port", str(_free_port()), *common],
                "head.log",
            )  # fmt: skip
            # started at once: the worker node waits for the head's GCS to answer
            mounts = " && ".join(f"mount -t tmpfs tmpfs {p}" for p in self.hidden)
            mkdirs = " && ".join(f"mkdir -p {p}" for p in self.empty) or "true"
            node = [sys.executable, "-c", _WORKER_NODE, "--address", self.address, "--num-cpus", str(WORKER_CPUS)]
            node += ["--temp-dir", str(self.temp / "w"), "--dashboard-agent-listen-port", str(_free_port()), *common]
            shell = f'{mounts} && {mkdirs} && exec "$@"'
            self.node = self._start(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, "worker-node", *node], "node.log"
            )
            self._wait_for(lambda: b"Ray runtime started" in (self.temp / "node.log").read_bytes(), "node.log")
            self._wait_for(self._node_joined, "node.log")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _node_joined(self) -> bool:
        """the worker node to join the head with its CPUs"""
        proc = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "status", "--address", self.address],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return proc.returncode == 0 and f"0.0/{WORKER_CPUS}.0 CPU" in proc.stdout

    def _wait_for(self, ready, log: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            if ready():
                return
            time.sleep(0.5)
        tail = (self.temp / log).read_text(errors="replace")[-3000:]
        what = getattr(ready, "__doc__", None) or "the cluster to start"
        raise AssertionError(f"waited {seconds:g} s for {what}; {log} ends:\n{tail}")

    def seen_by_node(self, path: Path) -> Path:
        """`path` as the worker node sees it (its mount namespace, through /proc)."""
        return Path(f"/proc/{self.node.pid}/root") / Path(path).relative_to("/")

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    pytest.importorskip("ray")
    """The cluster, shared by the tests here; what it hides from the worker node: `base`
    (the driver's stores and collections) and the shipped sample."""
    base = tmp_path_factory.mktemp("noshare")
    (base / "stores").mkdir()
    (base / "collection").mkdir()
    # no credentials in any node's environment: they travel with each task (--storage-option)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with Cluster(hidden=[base, SAMPLE], empty=[base / "stores" / "seen-empty"], env=env) as c:
        c.base = base
        yield c


def _extract(tracks, audio, out, *extra) -> list[str]:
    return ["extract", "--tracks", str(tracks), "--audio", str(audio), "--out", str(out), "--quiet", *extra]


def _on_the_cluster(cluster: Cluster, s3, tracks, out) -> tuple[list[str], dict[str, str]]:
    """`melset extract` on the cluster, the audio from S3, with the credentials as storage
    options (none in the environment of the driver or any node); and its environment."""
    options = {"key": s3.env["AWS_ACCESS_KEY_ID"], "secret": s3.env["AWS_SECRET_ACCESS_KEY"]}
    options["endpoint_url"] = s3.endpoint
    args = _extract(tracks, f"s3://{BUCKET}/fma_audio", out, "--subset", "large")
    args += ["--engine", "ray", "--ray-address", cluster.address]
    for key, value in options.items():
        args += ["--storage-option", f"{key}={value}"]
    return args, cluster.env


def _same_bytes(a: Path, b: Path) -> None:
    for name in ("mels.npy", "labels.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between {a} and {b}"


def _hidden_untouched(cluster: Cluster) -> None:
    """Nothing a task did shows under the driver's paths on the worker node."""
    stores = cluster.seen_by_node(cluster.base / "stores")
    assert sorted(os.listdir(stores)) == ["seen-empty"], "a worker made something where the driver's store is"
    assert os.listdir(stores / "seen-empty") == [], "a worker wrote into an empty folder at the store's path"
    assert not cluster.seen_by_node(cluster.base / "collection").exists()


@pytest.mark.slow
@needs_s3
@needs_unshare
def test_worker_node_without_the_driver_paths_gives_the_local_bytes(cluster, s3, tmp_path):
    """The store's path is an empty folder on the worker node: every matrix comes back."""
    s3.upload_folder(str(SAMPLE_AUDIO), BUCKET, "fma_audio")
    assert not cluster.seen_by_node(SAMPLE_AUDIO).exists()  # the worker node has no local copy of the audio
    local, remote = tmp_path / "local", cluster.base / "stores" / "seen-empty"
    run_melset(*_extract(SAMPLE_TRACKS, SAMPLE_AUDIO, local, "--subset", "large", "--workers", "2"))
    args, env = _on_the_cluster(cluster, s3, SAMPLE_TRACKS, remote)
    run_melset(*args, env=env, cwd=ROOT)
    _same_bytes(remote, local)
    _hidden_untouched(cluster)
    # the head has no CPUs, so every task ran on the worker node; the run saw its CPUs
    runs = json.loads((remote / "manifest.json").read_text())["runs"]
    assert runs[-1]["engine"] == "ray" and runs[-1]["workers"] == WORKER_CPUS, runs[-1]


@pytest.mark.slow
@needs_s3
@needs_unshare
def test_driver_killed_mid_run_resumes_to_the_same_bytes(cluster, s3, tmp_path):
    """The store's path does not exist on the worker node; the driver dies with SIGKILL."""
    n = 40
    tracks, audio = make_collection(cluster.base / "collection", n)
    s3.upload_folder(str(audio), BUCKET, "fma_audio")
    clean, killed = tmp_path / "clean", cluster.base / "stores" / "killed"
    run_melset(*_extract(tracks, audio, clean, "--subset", "large", "--workers", "2"))
    args, env = _on_the_cluster(cluster, s3, tracks, killed)
    proc = subprocess.Popen(
        melset_cmd(*args), env=env, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    journal, committed, deadline = killed / "journal.jsonl", 0, time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:  # kill once rows are committed
            committed = len(read_journal(str(journal))) if journal.exists() else 0
            if committed >= 12:
                break
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended by itself (an error): the assertion below says so
            pass
        proc.wait()
    assert 12 <= committed < n, f"the kill should land mid-run ({committed} rows committed)"
    run_melset(*args, env=env, cwd=ROOT)
    _same_bytes(killed, clean)
    _hidden_untouched(cluster)


# -- the sink alone: what a worker does when the store's path is not the driver's store --------


@pytest.fixture
def drivers_store(tmp_path):
    """A folder holding what a store's sink needs (.store_id, a sparse mels.npy), its sink as
    a worker receives it (pickled on the driver), and the matrix of a row."""
    import pickle

    root = tmp_path / "store"
    root.mkdir()
    (root / ".store_id").write_text("0123abcd\n", encoding="ascii")
    mm = np.lib.format.open_memmap(root / "mels.npy", mode="w+", dtype="float16", shape=(4, 3, 5))
    offset = mm.offset
    del mm
    sink = pickle.loads(pickle.dumps(RowSink(str(root / "mels.npy"), offset, (3, 5), "float16", "0123abcd")))
    return root, sink, np.arange(15, dtype=np.float32).reshape(3, 5)


def test_sink_writes_into_the_drivers_store(drivers_store):
    root, sink, matrix = drivers_store
    crc = sink.write(2, matrix)
    assert np.array_equal(np.load(root / "mels.npy")[2], matrix)
    assert crc == zlib.crc32(matrix.astype("float16").tobytes())


@pytest.mark.parametrize("seen", ["nothing", "an empty folder", "another store", "a copy of the store"])
def test_sink_elsewhere_raises_unreachable_and_creates_nothing(drivers_store, tmp_path, seen):
    """A worker node sees `seen` at the store's path: the matrix must come back, not land there."""
    root, sink, matrix = drivers_store
    os.rename(root, tmp_path / "drivers")  # the driver's store, out of the worker's sight
    if seen == "an empty folder":
        root.mkdir()
    elif seen == "another store":
        shutil.copytree(tmp_path / "drivers", root)
        (root / ".store_id").write_text("ffff0000\n", encoding="ascii")
    elif seen == "a copy of the store":  # same .store_id and size, another file
        shutil.copytree(tmp_path / "drivers", root)
    before = {p.name: p.read_bytes() for p in root.iterdir()} if root.exists() else None
    with pytest.raises(SinkUnreachable):
        sink.write(1, matrix)
    after = {p.name: p.read_bytes() for p in root.iterdir()} if root.exists() else None
    assert after == before, "the sink created or changed a file that is not the driver's"
