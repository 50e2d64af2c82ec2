"""Objects under a local directory or an ``s3://bucket/prefix``, behind one small interface, so the
``files`` source and sink have one code path.

Keys are relative to the root (``day=1/a.jsonl``), listed in lexical order as S3 lists them (UTF-8 byte
order), lazily: a listing from a key costs what lies after it, never a full listing. Names whose path
has a component starting with ``_`` or ``.`` (temporary files, ``_quarantine/``, manifests) are hidden.
A local directory lists only regular files, and reports what it passes over (``ObjectStore.skipped``):
names that are not valid UTF-8 (keys become positions and sink names), FIFOs, sockets and devices (reading
them would hang or never end), symlinked folders (never descended into: no loops, no escape from the
root), and symlinked files whose target is outside the root or not a regular file. A symlinked file whose
target resolves inside the root is an object.
Writes are atomic: a temporary ``_`` name and a rename locally, one PutObject on S3.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import stat
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from leanops.errors import ConfigError, SinkError, SourceError, UnreadableObject

S3_URI_PREFIX = "s3://"
#: In-memory buffer for an S3 upload before it spills to a temporary file.
SPOOL_BYTES = 64 * 1024 * 1024
_S3_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


@functools.cache
def _cached_s3_client(endpoint_url: str | None) -> Any:
    return boto3.client("s3", endpoint_url=endpoint_url, config=_S3_CONFIG)


def default_s3_client() -> Any:
    """An S3 client, one per process and endpoint: a task opens its source and sink (and Advance its
    source again), and a new client costs tens of milliseconds of every invocation."""
    return _cached_s3_client(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


class ObjectMissing(SourceError):
    """The object does not exist (any more)."""


def hidden(key: str) -> bool:
    return any(part.startswith(("_", ".")) for part in key.split("/"))


@dataclass(frozen=True)
class ObjectInfo:
    """Which version of an object: its size, and a stamp that changes whenever its bytes may have: on S3 its
    ETag, locally its device, inode and modification time in ns (:func:`local_version`)."""

    size: int
    version: str | None = None


def local_version(status: os.stat_result) -> str:
    """A local file's version stamp: rewritten in place, replaced by a rename, or appended to, it changes."""
    return f"{status.st_dev}:{status.st_ino}:{status.st_mtime_ns}"


class Opened(io.BufferedReader):
    """An object's bytes from some offset on (see :meth:`ObjectStore.open`), and the version they are of
    (``info``; None when unknown), learnt from the open itself at no extra request."""

    def __init__(self, raw: io.RawIOBase, info: ObjectInfo | None, buffer_size: int = io.DEFAULT_BUFFER_SIZE):
        super().__init__(raw, buffer_size)
        self.info = info


def opened_info(stream: IO[bytes]) -> ObjectInfo | None:
    """The version an :meth:`ObjectStore.open` stream is of, if it says."""
    return stream.info if isinstance(stream, Opened) else None


class ObjectStore(ABC):
    """A flat namespace of objects under one root (see the module docstring).

    ``skipped``: what listings passed over that is neither an object nor hidden, as ``(key, reason)``, each
    once, in listing order, printable (valid UTF-8): for the source to report, so nothing is skipped
    silently (a ``files`` source clears it as each read starts, and returns it with the batch).
    """

    uri: str
    skipped: list[tuple[str, str]]

    def _skip(self, key: str, reason: str) -> None:
        entry = (_printable(key), _printable(reason))
        if entry not in self.skipped:
            self.skipped.append(entry)

    @abstractmethod
    def check(self) -> None:
        """A :class:`ConfigError` with one clear line if the root (directory or bucket) does not exist."""

    @abstractmethod
    def keys(
        self, after: str | None = None, *, prefix: str = "", include_hidden: bool = False
    ) -> Iterator[str]:
        """Keys starting with ``prefix`` that sort strictly after ``after``, lexically, lazily."""

    @abstractmethod
    def open(self, key: str, start: int = 0) -> IO[bytes]:
        """A binary stream of the object from byte ``start`` on (empty past its end), whose ``tell()`` is
        the offset in the object (an :class:`Opened`, saying its version); :class:`ObjectMissing` if it does
        not exist."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """The object's size (and ETag) without reading it: one HEAD on S3; :class:`ObjectMissing` if it
        does not exist."""

    @abstractmethod
    def put(self, key: str, stream: IO[bytes]) -> None:
        """Replace ``key`` atomically with the contents of ``stream`` (a file positioned at its start)."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist, atomically; False if it already did (no change)."""

    def read_bytes(self, key: str) -> bytes | None:
        """The whole of a small object; None if it does not exist."""
        try:
            with self.open(key) as stream:
                return stream.read()
        except ObjectMissing:
            return None

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; no error if it does not exist."""

    def writer(self) -> IO[bytes]:
        """A scratch file to build an object in before :meth:`put`."""
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)

    def discard(self, stream: IO[bytes]) -> None:
        """Close a scratch file from :meth:`writer`, removing it if it was not put."""
        stream.close()


def _printable(text: str) -> str:
    """``text`` as valid UTF-8: a byte of a file name that is not UTF-8 reads ``\\xff``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: Why a listing passes over an entry whose name is not valid UTF-8.
NOT_UTF8 = "name is not valid UTF-8; rename it"


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return kind
    return "a special file"


def _not_an_object(entry: os.DirEntry[str], root: Path) -> str | None:
    """Why a listed entry is passed over (see the module docstring), or None: a real folder to descend into,
    a regular file, or a symlink to a regular file inside ``root`` (resolved). Never opens the entry."""
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        return NOT_UTF8
    try:
        if entry.is_symlink():
            target = Path(os.path.realpath(entry.path))
            if not target.is_relative_to(root):
                return f"symlink to {target}, outside the source folder: not followed"
            if entry.is_dir():
                return "symlinked folder: not followed (move the folder inside, or link its files)"
            if not entry.is_file():
                return f"symlink to {target}, which is missing or not a regular file: not followed"
            return None
        if entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
            return None
        kind = _file_kind(entry.stat(follow_symlinks=False).st_mode)
        return f"{kind}, not a regular file: not read (remove it or move it out of the source folder)"
    except OSError as exc:  # a symlink loop, a permission problem
        return f"cannot be inspected: {exc.strerror}"


def open_store(uri: str) -> ObjectStore:
    return S3Store(uri) if uri.startswith(S3_URI_PREFIX) else LocalStore(uri)


class LocalStore(ObjectStore):
    """Objects are files under a directory; keys are their relative POSIX paths."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.uri = str(self.root)
        self.skipped = []

    def check(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"directory {self.root} does not exist: create it or fix the topic's uri")

    def keys(
        self, after: str | None = None, *, prefix: str = "", include_hidden: bool = False
    ) -> Iterator[str]:
        if not self.root.is_dir():
            return iter(())
        return self._walk(self.root, "", after, prefix, include_hidden, self.root.resolve())

    def _walk(
        self, folder: Path, base: str, after: str | None, prefix: str, include_hidden: bool, real_root: Path
    ) -> Iterator[str]:
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise SourceError(f"cannot list {folder}: {exc.strerror}") from exc
        # A folder's keys all start with "<name>/": sorting folders as "<name>/" yields exact key order.
        # Only real folders: a symlinked one is never descended into (see the module docstring).
        named = sorted((base + e.name + ("/" if e.is_dir(follow_symlinks=False) else ""), e) for e in entries)
        for name, entry in named:
            if not include_hidden and entry.name.startswith(("_", ".")):
                continue
            if not (name.startswith(prefix) or prefix.startswith(name)):
                continue
            is_folder = name.endswith("/")
            if is_folder:
                # Skip a folder whose every key sorts at or before ``after``.
                if after is not None and after >= name and not after.startswith(name):
                    continue
            elif not ((after is None or name > after) and name.startswith(prefix)):
                continue
            reason = _not_an_object(entry, real_root)
            if reason is not None:
                self._skip(name, reason)
            elif is_folder:
                yield from self._walk(Path(entry.path), name, after, prefix, include_hidden, real_root)
            else:
                yield name

    def open(self, key: str, start: int = 0) -> IO[bytes]:
        """Only a regular file inside the root (a FIFO would hang the read, a device never end)."""
        path = self._checked(key)
        try:
            # Non-blocking: should a FIFO replace the file since the check, opening it does not wait for
            # a writer, and the check on the open file refuses it.
            raw = io.FileIO(path, "rb", opener=_open_nonblocking)
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} does not exist under {self.root}") from None
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            status = os.fstat(raw.fileno())
            self._refuse_unless_regular(key, status.st_mode)
            os.set_blocking(raw.fileno(), True)
            stream = Opened(raw, ObjectInfo(status.st_size, local_version(status)))
            stream.seek(start)
        except BaseException as exc:
            raw.close()
            if isinstance(exc, OSError):
                raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
            raise
        return stream

    def stat(self, key: str) -> ObjectInfo:
        status = os.stat(self._checked(key))
        return ObjectInfo(status.st_size, local_version(status))

    def _checked(self, key: str) -> Path:
        """The path of ``key``, if it is a regular file inside the root."""
        path = self.root / key
        try:
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(self.root.resolve()):
                raise UnreadableObject(
                    f"object {key} under {self.root} resolves to {target}, outside it: not read "
                    "(move the file inside the source folder)"
                )
            self._refuse_unless_regular(key, os.stat(path).st_mode)
        except FileNotFoundError:
            raise ObjectMissing(f"object {key} does not exist under {self.root}") from None
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
        return path

    def _refuse_unless_regular(self, key: str, mode: int) -> None:
        if not stat.S_ISREG(mode):
            raise UnreadableObject(
                f"object {key} under {self.root} is {_file_kind(mode)}, not a regular file: not read "
                "(remove it or move it out of the source folder)"
            )

    def writer(self) -> IO[bytes]:
        # Built in place under a hidden name, so the rename in put() is atomic and costs no copy.
        self.root.mkdir(parents=True, exist_ok=True)
        return open(self.root / f"_tmp-{uuid.uuid4().hex}", "w+b")

    def put(self, key: str, stream: IO[bytes]) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        name = getattr(stream, "name", None)
        if isinstance(name, str) and Path(name).parent == self.root and Path(name).name.startswith("_tmp-"):
            stream.flush()
            os.fsync(stream.fileno())
            os.replace(name, target)
            return
        temporary = target.parent / f"_tmp-{uuid.uuid4().hex}"
        try:
            with open(temporary, "wb") as out:
                shutil.copyfileobj(stream, out)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def create(self, key: str, data: bytes) -> bool:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f"_tmp-{uuid.uuid4().hex}"
        try:
            temporary.write_bytes(data)
            os.link(temporary, target)  # atomic, and fails if the target exists
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)
        return True

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def discard(self, stream: IO[bytes]) -> None:
        stream.close()
        name = getattr(stream, "name", None)
        if isinstance(name, str):
            Path(name).unlink(missing_ok=True)


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix``; keys are relative to the prefix."""

    def __init__(self, uri: str, client: Any | None = None) -> None:
        self.uri = uri
        bucket, _, prefix = uri[len(S3_URI_PREFIX) :].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or default_s3_client()
        self.skipped = []

    def check(self) -> None:
        try:
            # A one-key listing, not HeadBucket: the permission the reads use (s3:ListBucket, which a
            # least-privilege policy restricts to the prefix, a condition HeadBucket cannot meet).
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise ConfigError(
                    f"bucket {self.bucket} does not exist: create it or fix the topic's uri {self.uri}"
                ) from None
            if code in {"403", "AccessDenied", "Forbidden"}:
                raise ConfigError(
                    f"no access to bucket {self.bucket} ({self.uri}): check the role's policy"
                ) from None
            raise SourceError(f"cannot reach bucket {self.bucket}: {code}") from exc
        except BotoCoreError as exc:
            raise SourceError(f"cannot reach bucket {self.bucket}: {exc}") from exc

    def keys(
        self, after: str | None = None, *, prefix: str = "", include_hidden: bool = False
    ) -> Iterator[str]:
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if after is not None:
            arguments["StartAfter"] = self.prefix + after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**arguments):
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix) :]
                    if key and not key.endswith("/") and (include_hidden or not hidden(key)):
                        yield key
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                raise ConfigError(
                    f"bucket {self.bucket} does not exist: create it or fix the topic's uri"
                ) from None
            raise SourceError(f"cannot list {self.uri}: {code}") from exc

    def open(self, key: str, start: int = 0) -> IO[bytes]:
        ranged = {"Range": f"bytes={start}-"} if start else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **ranged)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404"}:
                raise ObjectMissing(f"object {key} does not exist under {self.uri}") from None
            if code == "InvalidRange":  # ``start`` at or past the end
                return Opened(_RawBody(io.BytesIO(), start), None)
            raise SourceError(f"cannot read {self.uri}/{key}: {code}") from exc
        # A ranged read's size is the total after the slash of its Content-Range: ``bytes 5-99/100``.
        total = str(response.get("ContentRange") or "").rpartition("/")[2]
        size = int(total) if total.isdigit() else start + int(response.get("ContentLength") or 0)
        info = ObjectInfo(size, response.get("ETag"))
        return Opened(_RawBody(response["Body"], start), info, buffer_size=1024 * 1024)

    def stat(self, key: str) -> ObjectInfo:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise ObjectMissing(f"object {key} does not exist under {self.uri}") from None
            raise SourceError(f"cannot read {self.uri}/{key}: {code}") from exc
        return ObjectInfo(int(head["ContentLength"]), head.get("ETag"))

    def put(self, key: str, stream: IO[bytes]) -> None:
        stream.seek(0)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=stream)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise SinkError(f"cannot write {self.uri}/{key}: {code}") from exc

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise SinkError(f"cannot write {self.uri}/{key}: {code}") from exc
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)


class _RawBody(io.RawIOBase):
    """A botocore StreamingBody as a raw stream, so it can be buffered, decompressed and iterated by line;
    ``tell()`` counts from ``start``, the object offset of its first byte."""

    def __init__(self, body: Any, start: int = 0) -> None:
        self.body = body
        self.offset = start

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.offset

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        self.offset += len(data)
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()
