"""Files at fsspec URLs (``s3://``, ``gs://``, ``az://``, ``http(s)://``), with the storage's
failures turned into sentences.

Credentials and endpoints come from each backend's own environment and configuration (for
S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ... as boto3 reads them),
and `--storage-option KEY=VALUE` passes the rest to the filesystem (``anon=true``,
``endpoint_url=...``). S3 clients get bounded timeouts and retries unless the options say
otherwise, so an endpoint that does not answer is a sentence within a minute, not a hang.
"""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

from melset.errors import MetadataError, MissingDependency, UsageError

PROBE_S = 60.0  # the longest a first look at a URL may take before it is called unanswered
LIST_S = 1800.0  # listing a collection (FMA's full set is 106,574 objects: ~107 pages on S3)

# scheme -> the extra that installs its fsspec backend
EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
    "http": "http",
    "https": "http",
}
_S3_CONFIG = {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}}
# scheme -> the module of its fsspec backend (what a worker imports on its first read)
BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
BACKENDS.update({"http": "aiohttp", "https": "aiohttp"})


class FetchError(Exception):
    """A file that exists (or may) but cannot be read; str() is the reason in words."""


def is_url(text: Any) -> bool:
    """Whether `text` is an fsspec URL (``scheme://...`` or a chain ``a::b``) rather than a local path."""
    return isinstance(text, str) and ("://" in text or "::" in text)


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def parse_storage_options(pairs: tuple[str, ...] | list[str] | None) -> dict:
    """``KEY=VALUE`` pairs as fsspec storage options; a VALUE that reads as JSON (true, 3,
    {"a": 1}) is taken as that value, any other as a string. UsageError names a bad pair."""
    out: dict = {}
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        key = key.strip()
        if not sep or not key or not key.replace("_", "").replace(".", "").isalnum():
            raise UsageError(
                f"--storage-option {pair!r}: give KEY=VALUE, e.g. --storage-option anon=true or "
                "--storage-option endpoint_url=http://127.0.0.1:9000"
            )
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def backend_modules(*urls) -> list[str]:
    """The installed backend modules the URLs among `urls` read through (``s3fs`` for
    ``s3://`` and ``zip://…::s3://…``): what workers can import before their first file."""
    import importlib.util

    found = []
    for url in urls:
        if not is_url(url):
            continue
        for part in str(url).split("::"):
            module = BACKENDS.get(scheme(part))
            if module and module not in found and importlib.util.find_spec(module) is not None:
                found.append(module)
    return found


def _options_for(url: str, options: dict) -> dict:
    if scheme(url) in ("s3", "s3a"):
        # a fresh copy: botocore rewrites the retries dict it is given, which would change
        # fsspec's cache key after the first client (a second client in every process)
        config = {**copy.deepcopy(_S3_CONFIG), **(options.get("config_kwargs") or {})}
        # one GET a file: with more, s3fs's cat_file sends a HEAD first (for the size) to split
        # objects over 50 MB into parallel ranges, which audio files are not
        return {"max_concurrency": 1, **options, "config_kwargs": config}
    return options


def filesystem(url: str, options: dict):
    """(fsspec filesystem, path inside it) for `url`. MissingDependency names the extra a
    scheme needs; UsageError names options the backend refuses."""
    try:
        import fsspec.core
    except ImportError:
        extra = EXTRAS.get(scheme(url), "s3")
        raise MissingDependency(f"{url}: reading URLs needs fsspec: pip install 'melset[{extra}]'") from None
    try:
        return fsspec.core.url_to_fs(url, **_options_for(url, options))
    except ImportError:
        extra = EXTRAS.get(scheme(url))
        hint = f"pip install 'melset[{extra}]'" if extra else "install the fsspec backend for it"
        raise MissingDependency(f"{url}: no filesystem for {scheme(url)}:// URLs is installed; {hint}") from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise UsageError(f"{url}: fsspec knows no {scheme(url)}:// filesystem") from None
        raise UsageError(f"{url}: the storage options do not suit this filesystem ({exc})") from None
    except TypeError as exc:
        raise UsageError(f"{url}: a --storage-option this filesystem does not take ({exc})") from None


def explain(exc: BaseException, url: str) -> str:
    """A storage failure in words, with what to do."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:300] or name
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return (
            "no credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "or pass --storage-option anon=true for a public bucket"
        )
    if isinstance(exc, TypeError) and "keyword argument" in text:
        return f"a --storage-option this filesystem does not take ({text})"
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return f"access denied ({text}): the credentials in use may not read it"
    if isinstance(exc, FileNotFoundError):
        return f"not found ({text})"
    connection = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError")
    if name in connection or isinstance(exc, (TimeoutError, ConnectionError)):
        where = " (AWS_ENDPOINT_URL or --storage-option endpoint_url=...)" if scheme(url) in ("s3", "s3a") else ""
        return f"the storage does not answer ({text}); check the endpoint{where} and the network"
    if isinstance(exc, (ValueError, TypeError)):
        return f"{name}: {text} (check the storage options: --storage-option and the backend's environment)"
    return f"{name}: {text}"


def _bounded(fn, seconds: float, what: str):
    """fn() in a daemon thread, given up after `seconds` (a client that never times out)."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TimeoutError(f"{what} took more than {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def probe_folder(url: str, options: dict, option: str) -> str:
    """The folder URL without its trailing "/", once something is known to be under it."""
    head, sep, rest = url.partition("://")
    if sep and not rest.strip("/"):
        raise MetadataError(f"{option} {url}: the URL names no bucket or folder")
    url = head + sep + rest.rstrip("/")
    fs, path = filesystem(url, options)
    try:
        found = _bounded(lambda: fs.ls(path, detail=False), PROBE_S, "listing it")
    except FileNotFoundError as exc:
        raise MetadataError(f"{option} {url}: no such bucket or folder ({explain(exc, url)})") from None
    except Exception as exc:
        raise MetadataError(f"{option} {url}: {explain(exc, url)}") from None
    if not found:
        raise MetadataError(f"{option} {url}: nothing is there (an empty or missing folder)")
    return url


def files(root: str, options: dict) -> dict[str, str]:
    """Every object under the folder URL `root` that is not hidden: relative path -> its version
    ("size N etag X" or "size N modified T")."""
    fs, path = filesystem(root, options)
    try:
        found = _bounded(lambda: fs.find(path, detail=True), LIST_S, "listing it")
    except Exception as exc:
        raise MetadataError(f"{root}: {explain(exc, root)}") from None
    out = {}
    base = path.rstrip("/") + "/"
    for name, info in found.items():
        if not name.startswith(base) or info.get("type") == "directory":
            continue
        rel = name[len(base) :]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        out[rel] = version(info)
    return out


def version(info: dict) -> str:
    """An object's size and ETag (or modification time) in words: what tells a changed object."""
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("content_settings", {})
    when = info.get("LastModified") or info.get("mtime") or info.get("last_modified") or info.get("updated")
    size = info.get("size")
    if isinstance(tag, str) and tag:
        return f"size {size} etag {tag.strip(chr(34))}"
    return f"size {size} modified {when}" if when else f"size {size}"


def open_file(url: str, options: dict):
    """A seekable binary file at `url`, read with range requests (for an archive's members)."""
    fs, path = filesystem(url, options)
    try:
        return fs.open(path, "rb")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise FetchError(explain(exc, url)) from None


def read_range(url: str, options: dict, start: int, end: int) -> bytes:
    """Bytes [start, end) of the object at `url`: one range request."""
    fs, path = filesystem(url, options)
    try:
        return fs.cat_file(path, start=start, end=end)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise FetchError(explain(exc, url)) from None


def read(url: str, options: dict, max_bytes: int | None = None) -> bytes:
    """The bytes of the object at `url` (FileNotFoundError when it is not there)."""
    fs, path = filesystem(url, options)
    try:
        if max_bytes is not None:
            with fs.open(path, "rb") as f:
                return f.read(max_bytes + 1)
        return fs.cat_file(path)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise FetchError("a folder, not a file") from None
    except Exception as exc:
        raise FetchError(explain(exc, url)) from None
