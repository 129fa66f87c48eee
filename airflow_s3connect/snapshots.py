"""A prefix materialised as local, versioned, complete trees: what a DAG bundle serves.

No Airflow here. A *manifest* is what the prefix holds, file by file (key, ETag, size,
version id); its *version* is a digest of the paths and ETags, so a same-size change is a
new version and an unchanged prefix keeps its version. Each version is a folder written
whole under a temporary name and renamed into place: a reader sees the old tree or the
new one, never half of either. A new version links the files it shares with the one
before (no request) and fetches the others, ETag-pinned, through the
:class:`~airflow_s3connect.downloads.Downloader`; a file replaced while it is fetched
fails the pin, and the sync starts again from a new listing.

The manifest of each version is also published under the prefix
(:data:`MANIFEST_FOLDER`), so that another machine asked for that version fetches exactly
those files: by version id where the bucket keeps versions, else pinned to their ETags.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_s3connect.downloads import Downloader, DownloadTask
from airflow_s3connect.errors import LocalPathError, ObjectChangedError, S3ConnectError
from airflow_s3connect.listing import Lister, ListQuery
from airflow_s3connect.local import LocalTree
from airflow_s3connect.objects import ObjectInfo, TransferConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

#: Under the synced prefix: the published manifests (never part of a tree).
MANIFEST_FOLDER = ".s3connect-bundle/"
#: Times a sync starts again when a file changes while it is fetched.
SYNC_ATTEMPTS = 3


@dataclass(frozen=True)
class Entry:
    key: str
    etag: str
    size: int
    version_id: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What a prefix held: relative path → the object it was."""

    files: dict[str, Entry]

    @property
    def version(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.files):
            digest.update(f"{path}\x1f{self.files[path].etag}\x1e".encode())
        return digest.hexdigest()[:20]

    def to_json(self) -> dict[str, Any]:
        files = {
            path: {"key": e.key, "etag": e.etag, "size": e.size, "version_id": e.version_id}
            for path, e in sorted(self.files.items())
        }
        return {"version": self.version, "files": files}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Manifest:
        files = {
            str(path): Entry(str(f["key"]), str(f["etag"]), int(f["size"]), f.get("version_id"))
            for path, f in value["files"].items()
        }
        return cls(files)

    def same_files(self, other: Manifest | None) -> bool:
        return other is not None and {p: e.etag for p, e in self.files.items()} == {
            p: e.etag for p, e in other.files.items()
        }


class Snapshots:
    """The versions of one prefix under ``root`` (``root/<version>/``), and where manifests live.

    :param manifests: a local folder keeping each version's manifest (what files a tree
        holds, to link them into the next one).
    """

    def __init__(
        self, client: S3Client, bucket: str, base: str, root: Path, manifests: Path, config: TransferConfig
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.base = base
        self.root = root
        self.manifests = manifests
        self.config = config

    def manifest_key(self, version: str) -> str:
        return f"{self.base}{MANIFEST_FOLDER}{version}.json"

    def list(self) -> Manifest:
        """What the prefix holds now: one ListObjectsV2 per 1,000 keys. Keys that cannot be
        a local path (``..``, empty segments, a trailing ``/`` folder marker) are left out
        and logged: one bad key does not stop the others."""
        lister = Lister(self.client, self.bucket, ListQuery(base=self.base))
        tree = LocalTree(self.root)
        files: dict[str, Entry] = {}
        for info in lister:
            if not isinstance(info, ObjectInfo) or info.key.startswith(self.base + MANIFEST_FOLDER):
                continue
            relative = info.key[len(self.base) :]
            try:
                tree.path_for(info.key, self.base)
            except LocalPathError as exc:
                log.warning("Left out of the bundle: %s", exc)
                continue
            files[relative] = Entry(info.key, info.etag, info.size, info.version_id)
        return Manifest(files)

    def path(self, version: str) -> Path:
        return self.root / version

    def local_manifest(self, version: str) -> Manifest | None:
        try:
            return Manifest.from_json(json.loads((self.manifests / f"{version}.json").read_text()))
        except (OSError, ValueError, KeyError):
            return None

    def materialize(self, manifest: Manifest, previous: str | None = None) -> Manifest:
        """``root/<version>/`` holding exactly ``manifest``'s files, written whole; the
        manifest with the version ids the GETs answered. Files ``previous`` holds with the
        same ETag are linked, not fetched."""
        version = manifest.version
        done = self.local_manifest(version)
        if done is not None and self.path(version).is_dir():
            return done
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifests.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            before = self.local_manifest(previous) if previous else None
            kept = before.files if before is not None and self.path(str(previous)).is_dir() else {}
            tree = LocalTree(staging)
            tasks: list[DownloadTask] = []
            files = dict(manifest.files)
            for relative, entry in manifest.files.items():
                target = tree.path_for(entry.key, self.base)
                same = kept.get(relative)
                if same is not None and same.etag == entry.etag:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _link(self.path(str(previous)) / relative, target)
                    files[relative] = Entry(entry.key, entry.etag, entry.size, entry.version_id or same.version_id)
                else:
                    tasks.append(DownloadTask(entry.key, target, entry.size, entry.etag, None, entry.version_id))
            downloader = Downloader(self.client, self.bucket, self.config)
            for fetched in downloader.download(tasks):
                relative = fetched.key[len(self.base) :]
                entry = files[relative]
                files[relative] = Entry(entry.key, entry.etag, entry.size, entry.version_id or fetched.version_id)
            result = Manifest(files)
            (self.manifests / f"{version}.json").write_text(json.dumps(result.to_json()))
            try:
                staging.rename(self.path(version))
            except OSError:  # another process made this version meanwhile: the same files
                if not self.path(version).is_dir():
                    raise
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def sync(self, current: str | None, publish: Callable[[str, bytes], None]) -> tuple[str, bool]:
        """Bring the newest version here: one listing when nothing changed; else the new
        tree, its manifest published, and (version, True). A file replaced while it is
        fetched starts the sync again from a new listing."""
        for attempt in range(1, SYNC_ATTEMPTS + 1):
            listed = self.list()
            if current is not None and listed.same_files(self.local_manifest(current)):
                return current, False
            try:
                made = self.materialize(listed, current)
            except ObjectChangedError:
                if attempt == SYNC_ATTEMPTS:
                    raise
                log.info("A file changed while the bundle was synced: listing again (attempt %d)", attempt + 1)
                continue
            publish(self.manifest_key(made.version), json.dumps(made.to_json()).encode())
            return made.version, True
        raise AssertionError("unreachable")

    def fetch(self, version: str, read: Callable[[str], bytes]) -> Path:
        """``root/<version>/`` on a machine that did not sync it: its published manifest,
        then its files (by version id where known, else pinned to the ETag)."""
        if self.local_manifest(version) is not None and self.path(version).is_dir():
            return self.path(version)
        try:
            manifest = Manifest.from_json(json.loads(read(self.manifest_key(version))))
        except S3ConnectError as exc:
            raise S3ConnectError(
                f"Version {version} of the bundle under s3://{self.bucket}/{self.base} has no manifest in S3 "
                f"({exc}): it was not made by a sync of this bundle, or its manifest was removed."
            ) from None
        if manifest.version != version:
            raise S3ConnectError(f"The manifest of version {version} describes version {manifest.version}.")
        newest = max(self.manifests.glob("*.json"), key=lambda p: p.stat().st_mtime, default=None)
        try:
            self.materialize(manifest, newest.stem if newest is not None else None)
        except ObjectChangedError as exc:
            raise S3ConnectError(
                f"Version {version} of the bundle cannot be rebuilt: {exc} A file of it was replaced in S3 and "
                "the bucket keeps no versions. Turn on versioning on the bucket so runs get their exact code."
            ) from None
        return self.path(version)


def _link(source: Path, target: Path) -> None:
    """The same file in two versions: a hard link (no bytes copied), a copy across devices."""
    try:
        os.link(source, target)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        shutil.copy2(source, target)


def point(link: Path, target: Path) -> None:
    """Make ``link`` a symlink to ``target`` atomically (a new link renamed over the old)."""
    staging = link.with_name(f".{link.name}-{uuid.uuid4().hex[:8]}")
    staging.symlink_to(target, target_is_directory=True)
    os.replace(staging, link)
