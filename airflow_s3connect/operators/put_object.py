"""S3PutObjectOperator: local files, data or records to S3, with conditional writes."""

from __future__ import annotations

import glob
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from airflow_s3connect._compat import Asset, AssetAlias
from airflow_s3connect.checksums import check_algorithm
from airflow_s3connect.errors import ArgumentError, SourceNotFoundError
from airflow_s3connect.formats import RecordFormat, content_type_for, get_format
from airflow_s3connect.local import relative_posix
from airflow_s3connect.manifests import ResultSink
from airflow_s3connect.mixins import CONNECTION_FIELDS
from airflow_s3connect.objects import Uploaded, result_entry
from airflow_s3connect.operators.base import RESULT_FIELDS, S3ConnectOperator, lineage_uris
from airflow_s3connect.scope import asset_uri
from airflow_s3connect.sources import queue_data, queue_records
from airflow_s3connect.uploads import Uploader
from airflow_s3connect.writes import WriteOptions

#: Per-object macros, rendered for each file rather than once per task.
PER_OBJECT_MACROS = ("filename", "relative_path", "extension", "uuid")
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".xz", ".zip")
#: Asset events per run at most (one per object): past it, downstream DAGs would be flooded.
MAX_ASSET_EVENTS = 1000


def file_extension(name: str) -> str:
    """``{extension}`` of a file: its last suffix, or the last two for compressed files (``csv.gz``)."""
    suffixes = Path(name).suffixes
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSED_SUFFIXES:
        return "".join(suffixes[-2:])[1:]
    return suffixes[-1][1:] if suffixes else ""


def expand_source(source: str | Sequence[str]) -> Iterator[tuple[Path, str]]:
    """(file, relative path) for a file, a directory (recursive) or a glob, in sorted order.

    The relative path is what ``{relative_path}`` and a key ending in '/' use: relative to
    the directory given, or to the glob's literal directory.
    """
    sources = [source] if isinstance(source, str) else list(source)
    for item in sources:
        path = Path(item).expanduser()
        if glob.has_magic(item):
            # The deepest directory written out in full, whatever the first wildcard is.
            literal = re.split(r"[*?\[]", item, maxsplit=1)[0]
            root = Path(literal).expanduser() if literal.endswith(os.sep) else Path(literal).expanduser().parent
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise SourceNotFoundError(f"source={item!r} matches no file.")
            for file in files:
                yield file, relative_posix(file, root)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                yield file, relative_posix(file, path)
        elif path.is_file():
            yield path, path.name
        else:
            raise SourceNotFoundError(f"source={item!r} is neither a file, a directory nor a glob matching files.")


class S3PutObjectOperator(S3ConnectOperator):
    """Write local files, data or records to S3. Needs s3:PutObject only, even with overwrite off.

    Exactly one of:

    :param source: a local file, a directory (recursive; structure kept under ``key``) or
        a glob (``/data/out/**/*.csv``), or a list of them.
    :param data: ``str``, ``bytes``, a readable binary file object, an iterator of
        ``bytes`` (streamed part by part, never held whole), or a callable returning one
        of those. Airflow calls a callable template field with ``context=`` and
        ``jinja_env=`` when the task renders (``def chunks(context, **_): yield ...``),
        so a generator is built in the task, never at parse time.
    :param records: an iterable of dicts, or such a callable returning one, written as
        ``format`` in bounded memory.

    :param key: target key, relative to the connection's path_prefix, macros allowed
        (``exports/{tenant}/{date}/{connection_run_id}.{extension}``). Per-object macros
        ``{filename}``, ``{relative_path}``, ``{extension}``, ``{uuid}`` are rendered for each
        file. For ``source``, a key ending in '/' (or empty) is a prefix: files land at
        ``key + relative path``.
    :param format: records format: csv, csv.gz, jsonl, jsonl.gz or parquet (parquet needs
        the ``parquet`` extra). ``{extension}`` follows it.
    :param overwrite: False makes the write conditional (``If-None-Match: *``): it fails
        with KeyExistsError if the key exists, atomically, so of concurrent writers exactly
        one wins.
    :param content_type: default: the format's, else from the key's suffix (``.csv.gz`` is
        ``application/gzip``, ``.jsonl`` ``application/x-ndjson``, ``.parquet``
        ``application/vnd.apache.parquet``), else ``application/octet-stream``; one rule for
        files, data and records.
    :param widen_ints: parquet only: store a field holding both ints and floats as double
        (ints above 2**53 then lose precision). Default: such a field fails with FormatError.
    :param checksum_algorithm: CRC32 (default), SHA1, SHA256, or CRC32C / CRC64NVME with
        ``botocore[crt]`` installed. Who verifies it depends on the connection's
        ``checksum_mode`` (see "Checksums and S3-compatible stores" in the docs).

    Large objects go multipart through s3transfer (``multipart_threshold``,
    ``chunk_size``, the connection's ``max_concurrency``); a failed multipart upload is
    aborted. Returns (``results="list"``) ``[{bucket, key, uri, size, etag, version_id,
    checksum}]`` with ``key`` relative to path_prefix; more files than ``max_xcom_objects``
    are refused before the first upload (see ``results`` in :class:`S3ConnectOperator`). Every
    :class:`~airflow.sdk.AssetAlias` in ``outlets`` receives an asset event per ``s3://``
    URI written (the first 1,000 of a run); an :class:`~airflow.sdk.Asset` outlet gets the counts as its event extra.
    """

    template_fields: Sequence[str] = (
        "key",
        "source",
        "data",
        "records",
        "metadata",
        "content_type",
        *RESULT_FIELDS,
        *CONNECTION_FIELDS,
    )
    macro_fields = ("key", "manifest_key")
    deferred_macros = PER_OBJECT_MACROS

    def __init__(
        self,
        *,
        key: str = "",
        source: str | Sequence[str] | None = None,
        data: Any = None,
        records: Iterable[Mapping[str, Any]] | Callable[..., Iterable[Mapping[str, Any]]] | None = None,
        format: str | None = None,
        overwrite: bool = True,
        content_type: str | None = None,
        checksum_algorithm: str = "CRC32",
        widen_ints: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = [
            name for name, value in (("source", source), ("data", data), ("records", records)) if value is not None
        ]
        if len(given) != 1:
            raise ArgumentError(f"Give exactly one of source=, data= or records= (got {', '.join(given) or 'none'}).")
        if records is not None and format is None:
            raise ArgumentError("records=... needs format=... (csv, csv.gz, jsonl, jsonl.gz or parquet).")
        if format is not None:
            get_format(format)
        if source is None and not key:
            raise ArgumentError("data= and records= need key=... (the object to write).")
        checksum_algorithm = check_algorithm(checksum_algorithm)
        self.key = key
        self.source = source
        self.data = data
        self.records = records
        self.format = format
        self.overwrite = overwrite
        self.content_type = content_type
        self.checksum_algorithm = checksum_algorithm.upper()
        self.widen_ints = widen_ints

    def _options(self, context: Any = None) -> WriteOptions:
        return self.write_options(
            context,
            overwrite=self.overwrite,
            content_type=self.content_type,
            checksum_algorithm=self.checksum_algorithm,
        )

    def execute(self, context: Any) -> Any:
        scope = self.hook.scope_settings.scope
        bucket = scope.bucket_for(self.bucket)
        sink = self.open_sink(context)
        written: list[Uploaded] = []
        remember = self.track_open(context, bucket)
        options = self._options(context)
        with (
            tempfile.TemporaryDirectory(prefix="s3connect-put-") as scratch,
            Uploader(self.client, bucket, self.transfer_config(), options, scope.prefix, remember) as uploader,
            self.running(uploader),
        ):
            if self.source is not None:
                self._queue_files(context, uploader, sink)
            elif self.records is not None:
                self._queue_records(context, uploader, Path(scratch))
            else:
                self._queue_data(context, uploader)
            for done in uploader.results():
                sink.add(result_entry(scope, done.bucket, done), done.size)
                if len(written) < MAX_ASSET_EVENTS:
                    written.append(done)
        self.log.info(
            "Wrote %d objects (%d bytes) to s3://%s%s",
            sink.count,
            sink.bytes,
            bucket,
            "" if self.overwrite else " (conditional writes: overwrite off)",
        )
        self._emit_assets(context, written, sink.count, sink.bytes)
        # The deepest directory holding every key written: where the console link opens.
        prefix = posixpath.commonpath([posixpath.dirname(w.key) for w in written]) if written else ""
        prefix = prefix + "/" if prefix else ""
        self.persist_console_link(context, bucket, prefix)
        self.record_lineage(outputs=lineage_uris([w.uri for w in written], f"s3://{bucket}/{prefix}"))
        return self.sink_result(context, sink)

    # -- sources ----------------------------------------------------------------------------
    def _key(self, context: Any, **values: str) -> str:
        """This object's key: per-object macros rendered; for files, a '/'-ended key is a prefix."""
        rendered = self.render_deferred(self.key, context, **values)
        if "relative_path" in values and (not rendered or rendered.endswith("/")):
            rendered += values["relative_path"]
        return self.hook.resolve(rendered, self.bucket).key

    def _queue_files(self, context: Any, uploader: Uploader, sink: ResultSink) -> None:
        assert self.source is not None
        files = list(expand_source(self.source))
        sink.check_count(len(files), "files to upload")
        if (
            len(files) > 1
            and self.key
            and not self.key.endswith("/")
            and not any("{" + name in self.key for name in ("filename", "relative_path", "uuid"))
        ):
            raise ArgumentError(
                f"{len(files)} files would all be written to key {self.key!r}: end the key with '/' or use "
                "{relative_path}, {filename} or {uuid} in it."
            )
        keys: dict[str, Path] = {}
        for path, relative in files:
            key = self._key(
                context, filename=path.name, relative_path=relative, extension=file_extension(path.name) or "bin"
            )
            if key in keys:
                raise ArgumentError(f"{keys[key]} and {path} would both be written to {key!r}: make keys unique.")
            keys[key] = path
        for key, path in keys.items():
            uploader.put_file(path, key, content_type_for(key))

    def _queue_records(self, context: Any, uploader: Uploader, scratch: Path) -> None:
        fmt: RecordFormat = get_format(str(self.format))
        key = self._key(context, extension=fmt.extension, filename=f"{self.task_id}.{fmt.extension}")
        # Rendering has called a callable already: what is left is the iterable itself.
        records = cast(Iterable[Mapping[str, Any]], self.records)
        queue_records(uploader, records, key, fmt, scratch, widen_ints=self.widen_ints)

    def _queue_data(self, context: Any, uploader: Uploader) -> None:
        fmt = get_format(self.format) if self.format else None
        extension = fmt.extension if fmt else "bin"
        key = self._key(context, extension=extension, filename=f"{self.task_id}.{extension}")
        queue_data(uploader, self.data, key, fmt)

    # -- assets -----------------------------------------------------------------------------
    def _emit_assets(self, context: Any, written: list[Uploaded], count: int, size: int) -> None:
        """One asset event per object written, for each AssetAlias outlet; counts for Asset outlets."""
        outlet_events = context.get("outlet_events")
        if outlet_events is None:
            return
        aliases = [o for o in self.outlets if isinstance(o, AssetAlias)]
        if aliases and count > len(written):
            self.log.warning(
                "%d objects written; asset events are emitted for the first %d only", count, MAX_ASSET_EVENTS
            )
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias):
                for done in written:
                    outlet_events[outlet].add(
                        Asset(asset_uri(done.bucket, done.key)), extra={"size": done.size, "etag": done.etag}
                    )
            elif isinstance(outlet, Asset):
                outlet_events[outlet].extra = {"objects": count, "bytes": size}
