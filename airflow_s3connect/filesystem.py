"""An fsspec filesystem over an s3connect client: ``ObjectStoragePath("s3connect://…")``.

No Airflow here (``airflow_s3connect.hooks.fs`` wires it to a connection). Small by design:
listing, info, ranged reads pinned to the ETag seen at open, writes through the same
uploader as Put (a spooled temporary file, then one upload: checksums, multipart,
``overwrite=False`` when asked), deletes and server-side copies. Every path is checked
against the connection's scope before any request (the client's guard checks again).

Paths are ``bucket/key`` with the full key, as fsspec's S3 filesystems have them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from glob import has_magic
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from airflow_s3connect import progress
from airflow_s3connect.deletes import BatchDelete
from airflow_s3connect.errors import (
    PRECONDITION_CODES,
    KeyExistsError,
    NoSuchBucketError,
    NoSuchKeyError,
    S3ConnectError,
    ScopeError,
    error_code,
    translated,
)
from airflow_s3connect.formats import content_type_for
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.objects import ObjectInfo, TransferConfig
from airflow_s3connect.uploads import Uploader
from airflow_s3connect.writes import WriteOptions

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from airflow_s3connect.scope import Scope

PROTOCOL = "s3connect"


class S3ConnectFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec over one connection's client and scope.

    :param overwrite: False makes every write create-only (an existing object is refused).
    """

    protocol = PROTOCOL
    root_marker = ""
    #: the Airflow connection this filesystem is (set when built from one)
    conn_id: str | None = None
    cachable = False  # the client carries credentials that refresh; never share instances by arguments

    def __init__(
        self, client: S3Client, scope: Scope, *, config: TransferConfig | None = None, overwrite: bool = True,
        meter: Callable[[str, bool], progress.Meter] | None = None,
    ) -> None:  # fmt: skip
        """:param meter: makes the progress meter of a bulk operation (``get``, ``put``,
        ``copy``, ``rm``, ``mv``) from its name and whether it is open-ended (a loop of
        per-file calls: its total is not known); default: lines in the log every 30 s."""
        super().__init__()
        self.client = client
        self.scope = scope
        self.config = config or TransferConfig()
        self.overwrite = overwrite
        self._meter = meter or (
            lambda operation, open_ended: progress.Meter(operation, open_ended=open_ended).attached(client)
        )

    # -- bulk operations: each one metered (a line every interval while it runs) ------------
    def get(self, *args: Any, **kwargs: Any) -> Any:
        with self._meter("Get", True):
            return super().get(*args, **kwargs)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        with self._meter("Put", True):
            return super().put(*args, **kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        with self._meter("Copy", True):
            return super().copy(*args, **kwargs)

    def get_file(self, rpath: str, lpath: Any, *args: Any, **kwargs: Any) -> Any:
        done = super().get_file(rpath, lpath, *args, **kwargs)
        if not isinstance(lpath, (str, os.PathLike)) or os.path.isfile(lpath):  # a folder is made, not fetched
            progress.of(self.client).finished()
        return done

    # -- paths -------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``s3connect://conn_id@bucket/key`` names the connection in the URL: the path is
        ``bucket/key`` (the connection is a storage option, :meth:`_get_kwargs_from_urls`)."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3 :]
            head, slash, rest = text.partition("/")
            if "@" in head:
                text = head.rpartition("@")[2] + slash + rest
        return text.rstrip("/") or cls.root_marker

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        head = str(path)[len(PROTOCOL) + 3 :].partition("/")[0] if str(path).startswith(f"{PROTOCOL}://") else ""
        if "@" not in head:
            return {}
        conn_id = head.rpartition("@")[0]
        if ":" in conn_id:  # not echoed: what follows the colon may be a password
            raise S3ConnectError(
                "An s3connect:// URL names the connection only (s3connect://conn_id@bucket/key): credentials come "
                "from the connection, remove ':' and what follows it."
            )
        return {"conn_id": conn_id}

    def _split(self, path: str) -> tuple[str, str]:
        named = self._get_kwargs_from_urls(str(path)).get("conn_id")
        if named and self.conn_id and named.lower() != self.conn_id.lower():
            raise ScopeError(
                f"The URL names connection {named!r}, but this filesystem is connection {self.conn_id!r}: open it "
                "with fsspec.open(url) or fsspec.filesystem('s3connect', conn_id=...)."
            )
        bucket, _, key = self._strip_protocol(path).partition("/")
        if not bucket:
            raise S3ConnectError(f"{path!r}: give s3connect://bucket/key.")
        return bucket, key

    def _object(self, path: str) -> tuple[str, str]:
        bucket, key = self._split(path)
        return self.scope.check(bucket, key).bucket, key

    def _listing(self, path: str) -> tuple[str, str]:
        bucket, key = self._split(path)
        prefix = key.rstrip("/") + "/" if key else ""
        return self.scope.resolve_prefix(f"s3://{bucket}/{prefix}").bucket, prefix

    # -- reading metadata ------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        bucket, prefix = self._listing(path)
        entries: list[dict[str, Any]] = []
        for entry in Lister(self.client, bucket, ListQuery(base=prefix, delimiter="/")):
            name = (entry.key if isinstance(entry, ObjectInfo) else entry.prefix[:-1])[len(prefix) :]
            if name in ("", ".", ".."):
                # The folder's own marker (``dir/``), or a key that is no path (``dir//x``,
                # ``dir/../x``): a folder cannot list it as a child. ``find`` (one flat
                # listing) still finds such keys.
                continue
            if isinstance(entry, ObjectInfo):
                entries.append(_file_entry(bucket, entry))
            else:
                entries.append({"name": f"{bucket}/{entry.prefix[:-1]}", "size": 0, "type": "directory"})
        if not entries and prefix:
            info = self.info(path)
            if info["type"] == "file":
                entries = [info]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        bucket, key = self._split(path)
        # The scope's own prefix without its "/" ("team" for "team/") is a directory, not an object.
        if key and not key.endswith("/") and key.startswith(self.scope.prefix):
            bucket, key = self._object(path)
            try:
                with translated("HeadObject", bucket, key):
                    head = self.client.head_object(Bucket=bucket, Key=key)
                return _file_entry(bucket, ObjectInfo(key, head["ContentLength"], head["ETag"], head["LastModified"]))
            except NoSuchKeyError:
                pass
        bucket, prefix = self._listing(path)
        try:
            with translated("ListObjectsV2", bucket, prefix):
                page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except NoSuchBucketError:
            raise FileNotFoundError(path) from None
        if page.get("KeyCount", 0) or not key or prefix == self.scope.prefix:  # the scope's root always is
            return {"name": f"{bucket}/{prefix.rstrip('/')}".rstrip("/"), "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    # fsspec answers these by catching OSError, which a refused path (ScopeError is a
    # PermissionError) would turn into a silent False: out of scope must say so.
    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.info(path)
        except FileNotFoundError:
            return False
        return True

    def isdir(self, path: str) -> bool:
        try:
            return bool(self.info(path)["type"] == "directory")
        except FileNotFoundError:
            return False

    def isfile(self, path: str) -> bool:
        try:
            return bool(self.info(path)["type"] == "file")
        except FileNotFoundError:
            return False

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
             **kwargs: Any) -> Any:  # fmt: skip
        """Everything below ``path`` from one flat listing (a request per 1,000 keys, not one
        per folder), so keys that are not tidy paths (``a//b``) are found as they are."""
        if maxdepth is not None:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        bucket, prefix = self._listing(path)
        found: dict[str, dict[str, Any]] = {}
        query = ListQuery(base=prefix, include_folder_markers=withdirs)
        try:
            listed = [e for e in Lister(self.client, bucket, query) if isinstance(e, ObjectInfo)]
        except NoSuchBucketError:
            listed = []
        for info in listed:
            if {".", ".."} & set(info.key.split("/")):
                continue  # not addressable: every call on one key refuses "." and ".." segments
            if not info.key.endswith("/"):
                found[f"{bucket}/{info.key}"] = _file_entry(bucket, info)
            if withdirs:  # every folder between the path and the object (a marker's own too)
                parts = info.key[len(prefix) :].split("/")[:-1]
                for depth in range(1, len(parts) + 1):
                    name = f"{bucket}/{prefix}{'/'.join(parts[:depth])}"
                    found.setdefault(name, {"name": name, "size": 0, "type": "directory"})
        if not found and prefix:
            try:
                single = self.info(path)
            except FileNotFoundError:
                single = None
            if single is not None and single["type"] == "file":
                found[single["name"]] = single
        elif withdirs and found:
            root = self._strip_protocol(path)
            found.setdefault(root, {"name": root, "size": 0, "type": "directory"})
        names = sorted(found)
        return {name: found[name] for name in names} if detail else names

    # -- walking: out of scope is an error, not an empty folder ------------------------------
    # fsspec's walk (and so find, glob, du, expand_path) treats any OSError from ls as "no
    # such folder": a path refused by the scope would read as empty.
    def walk(self, path: str, maxdepth: int | None = None, topdown: bool = True, on_error: str = "omit",
             **kwargs: Any) -> Any:  # fmt: skip
        self._listing(path)

        def refused(error: Exception) -> None:
            if isinstance(error, ScopeError) or on_error == "raise":
                raise error
            if callable(on_error):
                on_error(error)

        return super().walk(path, maxdepth=maxdepth, topdown=topdown, on_error=refused, **kwargs)

    # -- reading and writing ---------------------------------------------------------------------
    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              **kwargs: Any) -> S3ConnectFile:  # fmt: skip
        if mode not in ("rb", "wb", "xb"):
            raise S3ConnectError(
                f"mode={mode!r}: objects are read ('rb'), written whole ('wb') or created only if absent ('xb')."
            )
        return S3ConnectFile(self, path, mode, block_size=block_size or self.config.chunk_size,
                             autocommit=autocommit, **kwargs)  # fmt: skip

    def rm_file(self, path: str) -> None:
        bucket, key = self._object(path)
        with translated("DeleteObject", bucket, key):
            self.client.delete_object(Bucket=bucket, Key=key)

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete files, and with ``recursive`` folders: DeleteObjects, 1,000 keys a request.

        A folder's own marker object (``dir/``, as consoles and s3fs create) goes with it, so
        the folder is gone; the scope's root and the folders above it have none of ours to
        delete and are left (their objects inside the scope are deleted)."""
        with self._meter("Delete", False):
            self._delete(self._typed(path, recursive, maxdepth))

    def mv(self, path1: Any, path2: str, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any) -> None:
        """Copy, then delete exactly what was copied (with ``maxdepth`` too, what lies deeper
        stays). A folder into itself, or a folder without ``recursive``, is refused before
        anything is copied."""
        if path1 == path2:
            return
        for source in [path1] if isinstance(path1, str) else list(path1):
            inner = self._strip_protocol(source)
            if self._strip_protocol(path2).startswith(f"{inner}/") and self.isdir(source):
                raise S3ConnectError(f"Cannot move {source!r} into itself ({path2!r}): nothing was moved.")
            if not recursive and self.isdir(source):
                raise IsADirectoryError(f"{source!r} is a folder: move it with recursive=True.")
        with self._meter("Move", True) as meter:
            sources = self._typed(path1, recursive, maxdepth)
            self.copy(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)
            with meter.uncounted():  # a move's objects are those copied
                self._delete(sources)

    def _typed(self, path: Any, recursive: bool, maxdepth: int | None) -> dict[str, str]:
        """What :meth:`expand_path` finds, with each path's type taken from the same
        listing: deciding file or folder afterwards cost a HEAD per path."""
        types: dict[str, str] = {}
        for given in [path] if isinstance(path, str) else list(path):
            inner = self._strip_protocol(given)
            if has_magic(inner):
                matched = self.glob(inner, maxdepth=maxdepth, detail=True)
                types.update((name, entry["type"]) for name, entry in matched.items())
                deeper = None if maxdepth is None else maxdepth - 1
                if recursive and deeper != 0:
                    folders = [name for name, entry in matched.items() if entry["type"] == "directory"]
                    types.update(self._typed(folders, recursive, deeper) if folders else {})
                continue
            if recursive:
                found = self.find(inner, maxdepth=maxdepth, withdirs=True, detail=True)
                types.update((name, entry["type"]) for name, entry in found.items())
            if inner not in types:
                types[inner] = self.info(inner)["type"]  # FileNotFoundError names what is missing
        return types

    def _delete(self, paths: Mapping[str, str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        markers: set[str] = set()
        for found, kind in paths.items():
            bucket, key = self._split(found)
            if kind == "directory":
                key = f"{key}/" if key else ""
                try:
                    self.scope.check(bucket, key)
                except ScopeError:
                    continue
                if not key or key == self.scope.prefix:
                    continue
                markers.add(key)
            else:
                self._object(found)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            batch = BatchDelete(self.client, bucket)
            deleted = sum(1 for _ in batch.run(keys, frozenset(markers)))
            batch.check(deleted)
        self.invalidate_cache()

    def rmdir(self, path: str) -> None:
        """Remove an empty folder's marker object; a folder with objects in it is refused."""
        bucket, prefix = self._listing(path)
        if not prefix:
            raise S3ConnectError(f"{path!r} is a bucket: buckets are not removed through s3connect://.")
        with translated("ListObjectsV2", bucket, prefix):
            page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=2)
        keys = [o["Key"] for o in page.get("Contents", [])]
        if any(key != prefix for key in keys):
            raise OSError(39, f"Directory not empty: {path}")
        if keys:  # the marker itself (rm_file would strip its "/")
            with translated("DeleteObject", bucket, prefix):
                self.client.delete_object(Bucket=bucket, Key=prefix)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Server-side, pinned to the source's ETag, verified (as the Copy operator). A
        folder is copied by copying its files (``cp(..., recursive=True)``): on its own it
        is nothing to copy."""
        from airflow_s3connect.copies import Copier, CopyTask

        source_bucket, _ = self._split(path1)
        found = self.info(path1)
        target_bucket, target_key = self._object(path2)
        if found["type"] == "directory":
            return
        source_bucket, source_key = self._object(path1)
        source = ObjectInfo(source_key, found["size"], found["ETag"], found["LastModified"])
        options = WriteOptions(overwrite=self.overwrite)
        copier = Copier(self.client, source_bucket, self.client, target_bucket, self.config, options,
                        server_side=True, prefix=self.scope.prefix)  # fmt: skip
        list(copier.run([CopyTask(source, target_key)]))

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """S3 has no directories: a "directory" exists while a key is below it (the path is
        still checked against the scope)."""
        self._listing(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """S3 has no directories (see :meth:`mkdir`)."""
        self._listing(path)

    def modified(self, path: str) -> Any:
        found = self.info(path)
        if found["type"] != "file":
            raise IsADirectoryError(f"{path}: a folder of S3 keys has no modification time of its own")
        return found["LastModified"]

    def created(self, path: str) -> Any:
        """S3 keeps one time per object: its last modification (when it was written whole)."""
        return self.modified(path)


class S3ConnectFile(AbstractBufferedFile):  # type: ignore[misc]
    """Reads: ranged GETs pinned to the ETag seen at open. Writes: spooled to a temporary
    file and uploaded once, at close, through the Put uploader."""

    fs: S3ConnectFileSystem

    def __init__(self, fs: S3ConnectFileSystem, path: str, mode: str, **kwargs: Any) -> None:
        self.bucket, self.key = fs._object(path)
        self.etag = ""
        self._spool: Any = None
        if mode == "rb":
            found = fs.info(path)
            if found["type"] != "file":
                raise FileNotFoundError(path)
            self.etag = found["ETag"]
            kwargs["size"] = found["size"]
        elif mode == "xb" and fs.exists(path):
            # Refused at open, as a local file is; the write itself is create-only too
            # (If-None-Match), so a key taken between open and close is refused then.
            raise KeyExistsError(f"s3://{self.bucket}/{self.key} already exists: mode 'xb' creates only new objects.")
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)  # a read reaching past the end ends at it, as files do
        if start >= end:
            return b""
        with translated("GetObject", self.bucket, self.key):
            try:
                answer = self.fs.client.get_object(
                    Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end - 1}", IfMatch=self.etag
                )
            except ClientError as exc:
                if error_code(exc) in PRECONDITION_CODES:
                    raise S3ConnectError(
                        f"s3://{self.bucket}/{self.key} was replaced while it was read: open it again."
                    ) from None
                raise
            data = bytes(answer["Body"].read())
        progress.of(self.fs.client).moved(len(data))
        if len(data) != end - start:
            raise S3ConnectError(
                f"s3://{self.bucket}/{self.key}: asked for bytes {start}-{end - 1}, got {len(data)} bytes."
            )
        return data

    def _initiate_upload(self) -> None:
        self._spool = tempfile.NamedTemporaryFile(prefix="s3connect-fs-", delete=False)  # noqa: SIM115

    def _upload_chunk(self, final: bool = False) -> bool:
        if self._spool is None:
            self._initiate_upload()
        self._spool.write(self.buffer.getvalue())
        if not final:
            return True
        self._spool.close()
        if self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Upload what was written: at close, or inside ``fs.transaction`` when it completes."""
        spooled = Path(self._spool.name)
        try:
            options = WriteOptions(overwrite=self.fs.overwrite and self.mode != "xb")
            with Uploader(self.fs.client, self.bucket, self.fs.config, options, self.fs.scope.prefix) as uploader:
                uploader.put_file(spooled, self.key, content_type_for(self.key))
                list(uploader.results())
        finally:
            spooled.unlink(missing_ok=True)

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
            Path(self._spool.name).unlink(missing_ok=True)
        super().discard()


def _file_entry(bucket: str, info: ObjectInfo) -> dict[str, Any]:
    return {
        "name": f"{bucket}/{info.key}",
        "size": info.size,
        "type": "file",
        "ETag": info.etag,
        "LastModified": info.last_modified,
    }
