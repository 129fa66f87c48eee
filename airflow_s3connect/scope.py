"""Where a connection may act: bucket and key-prefix restriction, and key hygiene.

Pure: no I/O, no Airflow. Every operation turns the caller's (bucket, key) into an
:class:`ObjectRef` here *before* any request, so a key outside the connection's scope
fails without touching the network, and a relative key is joined to ``path_prefix``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from airflow_s3connect.errors import InvalidKeyError, ScopeError

MAX_KEY_BYTES = 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: An S3 access point ARN, which stands where a bucket name does (its alias is a bucket name).
_ACCESS_POINT_ARN = re.compile(
    r"^arn:aws[a-z-]*:s3:[a-z0-9-]+:(?P<account>\d{12}):accesspoint[/:](?P<name>[a-z0-9](?:[a-z0-9-]{1,48}[a-z0-9]))$"
)


def access_point_label(bucket: str) -> str | None:
    """The host label (``name-account``) requests to an access point ARN go to, else None."""
    match = _ACCESS_POINT_ARN.match(bucket)
    return f"{match['name']}-{match['account']}" if match else None


def check_bucket_name(bucket: str) -> str:
    """Return ``bucket`` if S3 accepts it as a bucket name (or an access point ARN), else
    explain the rule it breaks."""
    if access_point_label(bucket) is not None:
        return bucket
    if not _BUCKET_RE.match(bucket) or ".." in bucket or _IP_RE.match(bucket):
        raise InvalidKeyError(
            f"Invalid bucket name {bucket!r}: use 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit, not shaped like an IP address; "
            "or an access point ARN (arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME)."
        )
    return bucket


def path_problem(path: str, *, empty_segments: bool = True, backslash: bool = True) -> str | None:
    """Why ``path`` is unsafe as a key or part of one, or None: the one rule for keys,
    prefixes, macro values and the local paths keys become.

    Always refused: control characters, and ``.`` or ``..`` segments (S3 keeps them
    literally, but every file system and console resolves them, letting a key escape its
    prefix). ``empty_segments=False`` also refuses a leading, trailing or doubled '/' (a
    prefix, a path below one); ``backslash=False`` a backslash (a separator on Windows).
    """
    if _CONTROL_RE.search(path):
        return "contains control characters"
    parts = path.split("/")
    if any(part in (".", "..") for part in parts):
        return "contains a '.' or '..' segment"
    if not empty_segments and "" in parts:
        return "has an empty segment (a leading, trailing or doubled '/')"
    if not backslash and "\\" in path:
        return "contains a backslash"
    return None


def check_key(key: str, what: str = "key") -> str:
    """Return ``key`` if it is a key we are willing to write or read, else say why not:
    empty keys, keys over S3's 1,024 UTF-8 bytes, and :func:`path_problem`."""
    if not key:
        raise InvalidKeyError(f"Empty {what}: give a non-empty object key.")
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"{what} is {size} bytes long; S3 keys are at most {MAX_KEY_BYTES} UTF-8 bytes.")
    if (problem := path_problem(key)) is not None:
        raise InvalidKeyError(f"{what} {key!r} {problem}: remove that from the key.")
    return key


def normalize_prefix(prefix: str, what: str = "prefix") -> str:
    """A prefix as stored in S3: no leading '/', exactly one trailing '/', or '' for none."""
    prefix = prefix.strip().strip("/")
    if not prefix:
        return ""
    check_key(prefix, what)
    return prefix + "/"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A resolved, in-scope object location."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


#: Characters a URI path segment may hold as they are (RFC 3986 pchar); everything else in a
#: key (``#``, ``?``, ``%``, spaces, non-ASCII) is percent-encoded by :func:`asset_uri`.
_PCHAR = "/!$&'()*+,;=:@~"


def asset_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key`` as an Airflow Asset URI that names exactly this object.

    Airflow parses asset URIs: a raw ``#`` or ``?`` in a key would start a fragment or a
    query, and ``hash#one.csv`` and ``hash#two.csv`` would both become ``…/hash``.
    """
    return f"s3://{bucket}/{quote(key, safe=_PCHAR)}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return bucket, key


@dataclass(frozen=True, slots=True)
class Scope:
    """The bucket and prefix a connection is restricted to (either may be unset)."""

    bucket: str | None = None
    prefix: str = ""

    def describe(self) -> str:
        if self.bucket is None:
            return "any bucket"
        return f"s3://{self.bucket}/{self.prefix}"

    def bucket_for(self, bucket: str | None) -> str:
        """The bucket an operation acts on: the given one, else the connection's."""
        if bucket is None or bucket == "":
            if self.bucket is None:
                raise ScopeError("No bucket given and the connection has no default bucket: pass bucket=... .")
            return self.bucket
        check_bucket_name(bucket)
        if self.bucket is not None and bucket != self.bucket:
            raise ScopeError(
                f"Bucket {bucket!r} is outside the connection's scope {self.describe()}: "
                "use that bucket or another connection."
            )
        return bucket

    def resolve(self, key: str, bucket: str | None = None) -> ObjectRef:
        """Resolve a key given by a user.

        ``s3://bucket/full/key`` names a full location, which must lie inside the scope;
        any other key is relative to the connection's ``path_prefix``.
        """
        if key.startswith("s3://"):
            uri_bucket, full_key = split_s3_uri(key)
            if bucket and uri_bucket != bucket:
                raise ScopeError(f"Key {key!r} names bucket {uri_bucket!r} but bucket={bucket!r} was passed.")
            return self.check(self.bucket_for(uri_bucket), full_key)
        relative = key.lstrip("/")
        check_key(relative)
        return self.check(self.bucket_for(bucket), self.prefix + relative)

    def resolve_keys(self, keys: Iterable[str], bucket: str | None = None) -> tuple[str, list[str]]:
        """Several keys of one request (a DeleteObjects): their one bucket and full keys."""
        found, each = self.resolve_each(keys, bucket)
        return found, list(each)

    def resolve_each(self, keys: Iterable[str], bucket: str | None = None) -> tuple[str, Iterator[str]]:
        """Keys that must share one bucket, resolved as they are read (a manifest of any
        length): the bucket of the first, and the full keys; a key of another bucket raises
        when it is reached."""
        refs = (self.resolve(key, bucket) for key in keys)
        first = next(refs, None)
        if first is None:
            return self.bucket_for(bucket), iter(())

        def each() -> Iterator[str]:
            yield first.key
            for ref in refs:
                if ref.bucket != first.bucket:
                    raise ScopeError(
                        f"The keys name 2 buckets or more ({first.bucket}, {ref.bucket}): give one per call."
                    )
                yield ref.key

        return first.bucket, each()

    def resolve_prefix(self, prefix: str = "", bucket: str | None = None) -> ObjectRef:
        """Resolve a listing prefix (may be empty: the whole scope). The result keeps a
        trailing '/' only if the caller gave one, so ``prefix="data/2025"`` still matches
        ``data/2025-01.csv``."""
        if prefix.startswith("s3://"):
            uri_bucket, full = split_s3_uri(prefix)
            ref_bucket = self.bucket_for(uri_bucket)
        else:
            ref_bucket, full = self.bucket_for(bucket), self.prefix + prefix.lstrip("/")
        if full.strip("/"):
            check_key(full.rstrip("/"), "prefix")
        if not full.startswith(self.prefix) and not self.prefix.startswith(full):
            raise ScopeError(f"Prefix {full!r} is outside the connection's scope {self.describe()}: list inside it.")
        # A prefix shorter than the scope's (e.g. "" under "a/b/") is narrowed to the scope.
        return ObjectRef(ref_bucket, full if len(full) >= len(self.prefix) else self.prefix)

    def resolve_destination(self, prefix: str, bucket: str | None = None) -> ObjectRef:
        """Resolve a prefix objects are written under (an archive, a copy's target). Unlike a
        listing's, it is never narrowed: a prefix above the scope's is refused, since the
        keys it would make are not the ones the caller asked for."""
        ref = self.resolve_prefix(prefix, bucket)
        full = split_s3_uri(prefix)[1] if prefix.startswith("s3://") else self.prefix + prefix.lstrip("/")
        if not full.startswith(self.prefix):
            raise ScopeError(
                f"Prefix {full!r} is outside the connection's scope {self.describe()}: objects are written "
                f"only below {self.prefix!r}; give a prefix relative to the connection's path_prefix."
            )
        return ref

    def relative(self, key: str) -> str:
        """A full key as operators return it: relative to ``path_prefix`` (what ``resolve`` takes back)."""
        return key[len(self.prefix) :] if key.startswith(self.prefix) else key

    def check(self, bucket: str, key: str) -> ObjectRef:
        """Refuse a full (bucket, key) outside the scope."""
        check_key(key)
        if self.bucket is not None and bucket != self.bucket:
            raise ScopeError(f"s3://{bucket}/{key} is outside the connection's scope {self.describe()}.")
        if not key.startswith(self.prefix):
            raise ScopeError(
                f"s3://{bucket}/{key} is outside the connection's scope {self.describe()}: "
                "give a key relative to the connection's path_prefix."
            )
        return ObjectRef(bucket, key)
