"""The model store on S3-compatible object storage (AWS S3, MinIO, GCS in S3 mode), via s3fs.

Same layout as the local folder, under ``s3://bucket/prefix``: ``<model>/<version>/<file>``
and ``<model>/aliases.json``. Integrity checks and signatures live above, in ModelStore.

Object storage has no rename and no lock, so the two guarantees LocalStorage gets from
``rename`` and ``flock`` come from S3 conditional writes (AWS since 2024, MinIO, moto):

- a version number is taken by creating ``<model>/<v>/.version`` with ``If-None-Match: *``:
  of two trainers racing for v, exactly one create succeeds, the other tries v+1. Its files
  follow, ``metadata.json`` last: a version is listed once its metadata exists, so a reader
  never sees half a version (a trainer that dies in between leaves a gap in the numbers).
- ``aliases.json`` is replaced with ``If-Match: <ETag>`` of the copy the change was computed
  from (``If-None-Match: *`` for the first one): a promote that lost the race re-reads and
  re-applies its change (and its compare-and-set), never overwrites the winner's.

:meth:`S3Storage.aliases_token` is one HEAD (the ETag), at most once per ``poll_seconds`` per
model and process (workers ask before every batch; their poll thread asks that often anyway).
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import s3fs

from core.errors import ModelNotFound
from core.settings import MODEL_NAME, ObjectStoreSettings

VERSION_MARKER = ".version"
DATA_FOLDER = "data"  # core/store.py's
METADATA_FILE = "metadata.json"
ALIASES_FILE = "aliases.json"
MAX_RACE = 1000
CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


class StoreUnreachable(ConnectionError):
    """The object store does not answer, or its bucket does not exist."""


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _code(exc: BaseException) -> str:
    """The S3 error code behind an exception s3fs translated (or the exception's own)."""
    for cause in (exc, exc.__cause__, exc.__context__):
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


class S3Storage:
    """A bucket (and key prefix) of an S3-compatible store; thread-safe, one per process."""

    def __init__(self, url: str, options: ObjectStoreSettings, poll_seconds: float = 0.0):
        bucket, _, prefix = url.split("://", 1)[1].partition("/")
        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self.endpoint = options.endpoint_url
        self.poll_seconds = poll_seconds
        self._tokens: dict[str, tuple[float, object]] = {}  # model -> (when, ETag)
        self.fs = s3fs.S3FileSystem(
            key=options.access_key_id or None,
            secret=options.secret_access_key or None,
            endpoint_url=options.endpoint_url or None,
            client_kwargs={"region_name": options.region} if options.region else {},
            config_kwargs={
                "connect_timeout": 5,
                "read_timeout": 30,
                "retries": {"total_max_attempts": 2},
            },
            use_listings_cache=False,
            skip_instance_cache=True,  # fsspec caches instances; this one is ours
        )

    def describe(self) -> str:
        where = f" at {mask_url(self.endpoint)}" if self.endpoint else ""
        return f"{self.url}{where}"

    def _key(self, *parts: str | int) -> str:
        return "/".join(str(p) for p in (self.prefix, *parts) if p != "")

    def _path(self, *parts: str | int) -> str:
        return f"{self.bucket}/{self._key(*parts)}"

    def _list(self, prefix: str, delimiter: str = "") -> tuple[list[str], list[str]]:
        """Keys and common prefixes under ``prefix`` (every page)."""
        keys, prefixes, token = [], [], None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            if delimiter:
                extra["Delimiter"] = delimiter
            page = self.fs.call_s3("list_objects_v2", Bucket=self.bucket, Prefix=prefix, **extra)
            keys += [item["Key"] for item in page.get("Contents", [])]
            prefixes += [item["Prefix"] for item in page.get("CommonPrefixes", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return keys, prefixes

    def check(self) -> None:
        """Raise StoreUnreachable (naming the URL, password masked) unless the bucket answers."""
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except Exception as exc:  # any failure (botocore's too) means: cannot use it
            reason = (
                str(exc).replace(self.endpoint, mask_url(self.endpoint))
                if self.endpoint
                else str(exc)
            )
            raise StoreUnreachable(
                f"the model store {self.describe()} does not answer: {reason or type(exc).__name__}"
            ) from None

    def list_models(self) -> list[str]:
        _, prefixes = self._list(self._key("") + ("/" if self.prefix else ""), "/")
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes)
        return sorted(n for n in names if re.fullmatch(MODEL_NAME, n))

    def _versions(self, model: str) -> dict[int, set[str]]:
        """Each version number in use and the files it has."""
        base = self._key(model) + "/"
        keys, _ = self._list(base)
        found: dict[int, set[str]] = {}
        for key in keys:
            version, _, name = key[len(base) :].partition("/")
            if version.isdigit() and name:
                found.setdefault(int(version), set()).add(name)
        return found

    def list_versions(self, model: str) -> list[int]:
        return sorted(v for v, names in self._versions(model).items() if METADATA_FILE in names)

    def read(self, model: str, version: int, name: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(model, version, name))
        except FileNotFoundError:
            raise ModelNotFound(f"model {model!r} has no version {version} ({name})") from None

    def _put(self, key: str, data: bytes, **condition: str) -> bool:
        """PUT; False when ``condition`` (If-Match / If-None-Match) did not hold."""
        try:
            self.fs.call_s3("put_object", Bucket=self.bucket, Key=key, Body=data, **condition)
        except OSError as exc:
            if condition and (isinstance(exc, FileExistsError) or _code(exc) in CONFLICT_CODES):
                return False
            raise
        return True

    def write_new_version(self, model: str, files: Callable[[int], dict[str, bytes]]) -> int:
        """Take the next free number with a create-only marker, then write the files."""
        version = max(self._versions(model), default=0) + 1
        marker = f"{socket.gethostname()} {uuid.uuid4().hex}".encode()
        for _ in range(MAX_RACE):
            if self._put(self._key(model, version, VERSION_MARKER), marker, IfNoneMatch="*"):
                break
            version = max(max(self._versions(model), default=0), version) + 1
        else:
            raise RuntimeError(f"could not allocate a version for {model!r}")
        contents = files(version)
        metadata = contents.pop(METADATA_FILE)
        for name, data in contents.items():
            self._put(self._key(model, version, name), data)
        self._put(self._key(model, version, METADATA_FILE), metadata)  # last: now it is listed
        return version

    def write(self, model: str, version: int, name: str, data: bytes) -> None:
        if version not in self._versions(model):
            raise ModelNotFound(f"model {model!r} has no version {version}")
        self._put(self._key(model, version, name), data)

    def write_data(self, model: str, path: str, data: bytes) -> None:
        self._put(self._key(model, DATA_FOLDER, path), data)

    def list_data(self, model: str, prefix: str) -> list[str]:
        base = self._key(model, DATA_FOLDER) + "/"
        keys, _ = self._list(base + prefix)
        return sorted(key[len(base) :] for key in keys)

    def read_data(self, model: str, path: str) -> bytes:
        return self.fs.cat_file(self._path(model, DATA_FOLDER, path))

    def read_aliases(self, model: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(model, ALIASES_FILE))
        except FileNotFoundError as exc:
            if _code(exc) == "NoSuchBucket":
                raise StoreUnreachable(f"the bucket of {self.describe()} is gone") from None
            return None

    def update_aliases(self, model: str, change: Callable[[bytes | None], bytes]) -> bytes:
        """Compare-and-set on the ETag: re-read and re-apply ``change`` until no one else
        replaced the file in between (``change`` may raise, e.g. AliasConflict)."""
        key = self._key(model, ALIASES_FILE)
        for _ in range(MAX_RACE):
            etag = self._etag(model)
            current = self.read_aliases(model) if etag is not None else None
            data = change(current)
            condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
            if self._put(key, data, **condition):
                self._tokens.pop(model, None)  # this process follows its own change at once
                return data
            if self.read_aliases(model) == data:  # our own PUT, answered twice (a retry)
                return data
        raise RuntimeError(f"could not update the aliases of {model!r}")

    def aliases_token(self, model: str) -> object:
        """The aliases file's ETag, None while there is none; asked at most every
        ``poll_seconds``."""
        now = time.monotonic()
        seen = self._tokens.get(model)
        if seen is not None and now - seen[0] < self.poll_seconds:
            return seen[1]
        token = self._etag(model)
        self._tokens[model] = (now, token)
        return token

    def _etag(self, model: str) -> object:
        """One HEAD of the aliases file: its ETag, or None."""
        key = self._key(model, ALIASES_FILE)
        try:
            return self.fs.call_s3("head_object", Bucket=self.bucket, Key=key)["ETag"]
        except FileNotFoundError:
            pass
        # A HEAD's 404 has no body: no aliases yet, or no bucket any more (then say so, so
        # that readers keep what they serve instead of concluding there is no production).
        self.check()
        return None
