"""Which S3 API operations a scoped connection may call, and which of their parameters
must lie inside the scope.

Pure: no I/O, no Airflow. The client checks every request against this table before it
is signed or sent (:func:`check_call`), so a connection restricted to a bucket and a
path prefix cannot reach anything else, even through the raw boto3 client
``S3ConnectHook.get_conn()`` returns. Allow-listing, not deny-listing: an operation that
a later botocore release adds is refused on a scoped connection until it is classified
here, and a test fails when the installed botocore knows an operation this table does not.

Why each class is safe:

* ``object``: acts on the one object ``Key`` names, in ``Bucket``;
* ``copy``: writes ``Key`` and reads the object ``CopySource`` / ``RenameSource`` names:
  both are checked;
* ``delete-many``: every ``Delete.Objects[*].Key`` is checked;
* ``listing``: results always start with ``Prefix``, so a ``Prefix`` inside the scope keeps
  every page inside it, whatever the markers (``StartAfter``, ``Marker``, ``KeyMarker``,
  ``ContinuationToken``) say;
* ``bucket-read``: only the bucket's existence, region or a session for it, no object
  and no configuration;
* ``account``: about no bucket in particular (listing buckets, creating one): refused when
  the connection is restricted to a bucket;
* ``admin``: the bucket's configuration (policy, ACL, lifecycle, CORS, encryption,
  replication, tagging, deletion…), which reaches every object in it: refused on any
  scoped connection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any
from urllib.parse import unquote

from airflow_s3connect.errors import ScopeError
from airflow_s3connect.scope import Scope, path_problem


class Access(str, Enum):
    OBJECT = "object"
    COPY = "copy"
    DELETE_MANY = "delete-many"
    LISTING = "listing"
    BUCKET_READ = "bucket-read"
    ACCOUNT = "account"
    ADMIN = "admin"


#: Every S3 operation botocore knows, by class. The only table of its kind.
_CLASSES: Mapping[Access, tuple[str, ...]] = {
    Access.OBJECT: (
        "AbortMultipartUpload",
        "CompleteMultipartUpload",
        "CreateMultipartUpload",
        "DeleteObject",
        "DeleteObjectAnnotation",
        "DeleteObjectTagging",
        "GetObject",
        "GetObjectAcl",
        "GetObjectAnnotation",
        "GetObjectAttributes",
        "GetObjectLegalHold",
        "GetObjectRetention",
        "GetObjectTagging",
        "GetObjectTorrent",
        "HeadObject",
        "ListObjectAnnotations",
        "ListParts",
        "PutObject",
        "PutObjectAcl",
        "PutObjectAnnotation",
        "PutObjectLegalHold",
        "PutObjectRetention",
        "PutObjectTagging",
        "RestoreObject",
        "SelectObjectContent",
        "UpdateObjectEncryption",
        "UploadPart",
    ),
    Access.COPY: ("CopyObject", "RenameObject", "UploadPartCopy"),
    Access.DELETE_MANY: ("DeleteObjects",),
    Access.LISTING: ("ListMultipartUploads", "ListObjectVersions", "ListObjects", "ListObjectsV2"),
    Access.BUCKET_READ: ("CreateSession", "GetBucketLocation", "HeadBucket"),
    Access.ACCOUNT: ("CreateBucket", "ListBuckets", "ListDirectoryBuckets", "WriteGetObjectResponse"),
    Access.ADMIN: (
        "CreateBucketMetadataConfiguration",
        "CreateBucketMetadataTableConfiguration",
        "DeleteBucket",
        "DeleteBucketAnalyticsConfiguration",
        "DeleteBucketCors",
        "DeleteBucketEncryption",
        "DeleteBucketIntelligentTieringConfiguration",
        "DeleteBucketInventoryConfiguration",
        "DeleteBucketLifecycle",
        "DeleteBucketMetadataConfiguration",
        "DeleteBucketMetadataTableConfiguration",
        "DeleteBucketMetricsConfiguration",
        "DeleteBucketOwnershipControls",
        "DeleteBucketPolicy",
        "DeleteBucketReplication",
        "DeleteBucketTagging",
        "DeleteBucketWebsite",
        "DeletePublicAccessBlock",
        "GetBucketAbac",
        "GetBucketAccelerateConfiguration",
        "GetBucketAcl",
        "GetBucketAnalyticsConfiguration",
        "GetBucketCors",
        "GetBucketEncryption",
        "GetBucketIntelligentTieringConfiguration",
        "GetBucketInventoryConfiguration",
        "GetBucketLifecycle",
        "GetBucketLifecycleConfiguration",
        "GetBucketLogging",
        "GetBucketMetadataConfiguration",
        "GetBucketMetadataTableConfiguration",
        "GetBucketMetricsConfiguration",
        "GetBucketNotification",
        "GetBucketNotificationConfiguration",
        "GetBucketOwnershipControls",
        "GetBucketPolicy",
        "GetBucketPolicyStatus",
        "GetBucketReplication",
        "GetBucketRequestPayment",
        "GetBucketTagging",
        "GetBucketVersioning",
        "GetBucketWebsite",
        "GetObjectLockConfiguration",
        "GetPublicAccessBlock",
        "ListBucketAnalyticsConfigurations",
        "ListBucketIntelligentTieringConfigurations",
        "ListBucketInventoryConfigurations",
        "ListBucketMetricsConfigurations",
        "PutBucketAbac",
        "PutBucketAccelerateConfiguration",
        "PutBucketAcl",
        "PutBucketAnalyticsConfiguration",
        "PutBucketCors",
        "PutBucketEncryption",
        "PutBucketIntelligentTieringConfiguration",
        "PutBucketInventoryConfiguration",
        "PutBucketLifecycle",
        "PutBucketLifecycleConfiguration",
        "PutBucketLogging",
        "PutBucketMetricsConfiguration",
        "PutBucketNotification",
        "PutBucketNotificationConfiguration",
        "PutBucketOwnershipControls",
        "PutBucketPolicy",
        "PutBucketReplication",
        "PutBucketRequestPayment",
        "PutBucketTagging",
        "PutBucketVersioning",
        "PutBucketWebsite",
        "PutObjectLockConfiguration",
        "PutPublicAccessBlock",
        "UpdateBucketMetadataAnnotationTableConfiguration",
        "UpdateBucketMetadataInventoryTableConfiguration",
        "UpdateBucketMetadataJournalTableConfiguration",
    ),
}

#: Operation name → class, derived from the table above.
OPERATIONS: Mapping[str, Access] = {name: access for access, names in _CLASSES.items() for name in names}

#: Parameters naming a location that :func:`check_call` checks, per class. Any other
#: parameter of an allowed operation cannot name a bucket or key outside the scope
#: (the test of this module proves it for every member of botocore's model).
CHECKED: Mapping[Access, frozenset[str]] = {
    Access.OBJECT: frozenset({"Bucket", "Key"}),
    Access.COPY: frozenset({"Bucket", "Key", "CopySource", "RenameSource"}),
    Access.DELETE_MANY: frozenset({"Bucket", "Delete"}),
    Access.LISTING: frozenset({"Bucket", "Prefix"}),
    Access.BUCKET_READ: frozenset({"Bucket"}),
    Access.ACCOUNT: frozenset(),
    Access.ADMIN: frozenset(),
}

#: Locations inside structures, per operation: (dotted path, what it names). A restore with
#: a SELECT writes its output to another place, which must lie inside the scope too. The
#: test of this module walks every structure, list and map of botocore's model.
NESTED: Mapping[str, tuple[tuple[str, str], ...]] = {
    "RestoreObject": (
        ("RestoreRequest.OutputLocation.S3.BucketName", "bucket"),
        ("RestoreRequest.OutputLocation.S3.Prefix", "prefix"),
    ),
}

#: Operations whose presigned URL cannot be scoped: what they name lies in a header or a
#: body that the URL's holder chooses (an unsigned payload) or that the URL does not show.
PRESIGN_REFUSED: Mapping[str, str] = {
    "CopyObject": "its source is a header the URL does not show",
    "UploadPartCopy": "its source is a header the URL does not show",
    "RenameObject": "its source is a header the URL does not show",
    "DeleteObjects": "the keys are in a body the URL's holder chooses",
    "RestoreObject": "its output location is in a body the URL's holder chooses",
}

_REFUSED_WHY = {
    Access.ADMIN: "it changes or reads the configuration of the whole bucket",
    Access.ACCOUNT: "it is not about the connection's bucket",
}

#: What botocore's copy-source handler leaves at the end of a string source.
_VERSION_SUFFIX = re.compile(r"\?versionId=[^\s]+$")


def restricted(scope: Scope) -> bool:
    """Whether the connection is restricted at all (a bucket or a prefix)."""
    return scope.bucket is not None or bool(scope.prefix)


def check_call(scope: Scope, operation: str, params: Mapping[str, Any]) -> None:
    """Refuse ``operation`` with ``params`` unless everything it names lies inside ``scope``.

    Raises :class:`ScopeError` naming the operation, the parameter and the scope.
    """
    if not restricted(scope):
        return
    where = scope.describe()
    access = OPERATIONS.get(operation)
    if access is None:
        raise ScopeError(
            f"{operation} is refused on a connection restricted to {where}: this release of airflow-s3connect "
            "does not know whether it stays inside the scope. Use a connection without bucket and path_prefix."
        )
    if access is Access.ADMIN or (access is Access.ACCOUNT and scope.bucket is not None):
        raise ScopeError(
            f"{operation} is refused on a connection restricted to {where}: {_REFUSED_WHY[access]}. "
            "Use a connection without bucket and path_prefix for it."
        )
    if access is Access.ACCOUNT:
        return
    _check_bucket(scope, operation, "Bucket", params.get("Bucket"))
    if access in (Access.OBJECT, Access.COPY):
        _check_key(scope, operation, "Key", params.get("Key"))
    if access is Access.COPY:
        for name in ("CopySource", "RenameSource"):
            if params.get(name) is not None:
                bucket, key = _source(params[name])
                _check_bucket(scope, operation, name, bucket)
                _check_key(scope, operation, name, key)
    elif access is Access.DELETE_MANY:
        delete = params.get("Delete") or {}
        for index, entry in enumerate(delete.get("Objects") or ()):
            _check_key(scope, operation, f"Delete.Objects[{index}].Key", entry.get("Key"))
    elif access is Access.LISTING:
        _check_prefix(scope, operation, "Prefix", params.get("Prefix"))
    for path, kind in NESTED.get(operation, ()):
        value = _dig(params, path)
        if value is None and _dig(params, path.rpartition(".")[0]) is None:
            continue  # the structure holding it is not sent
        if kind == "bucket":
            _check_bucket(scope, operation, path, value)
        else:
            _check_prefix(scope, operation, path, value)


def _dig(params: Mapping[str, Any], path: str) -> Any:
    value: Any = params
    for name in path.split("."):
        value = value.get(name) if isinstance(value, Mapping) else None
    return value


def _check_prefix(scope: Scope, operation: str, name: str, prefix: Any) -> None:
    """A listing's (or an output's) prefix: every key it stands for starts with the scope's."""
    if scope.prefix and (not isinstance(prefix, str) or not prefix.startswith(scope.prefix)):
        shown = f"no {name}" if prefix is None else f"{name} {prefix!r}"
        raise ScopeError(
            f"{operation} with {shown} is outside the connection's scope {scope.describe()}: "
            f"pass a {name} starting with {scope.prefix!r}."
        )
    if isinstance(prefix, str) and (problem := path_problem(prefix)) is not None:
        raise ScopeError(f"{operation}: {name} {prefix!r} {problem}: remove that from it.")


def _check_bucket(scope: Scope, operation: str, name: str, bucket: Any) -> None:
    if scope.bucket is not None and bucket != scope.bucket:
        raise ScopeError(
            f"{operation}: {name} names bucket {bucket!r}, outside the connection's scope {scope.describe()}."
        )


def _check_key(scope: Scope, operation: str, name: str, key: Any) -> None:
    """A key inside the prefix that :func:`path_problem` accepts: some stores and proxies
    resolve '.'/'..' segments in the request path, which would move a key out of its prefix
    or bucket."""
    if not isinstance(key, str) or not key.startswith(scope.prefix):
        raise ScopeError(
            f"{operation}: {name} {key!r} is outside the connection's scope {scope.describe()}: "
            f"give a key starting with {scope.prefix!r}."
        )
    if (problem := path_problem(key)) is not None:
        raise ScopeError(
            f"{operation}: {name} {key!r} {problem}, which some stores resolve out of the connection's scope "
            f"{scope.describe()}: remove that from the key."
        )


def copy_source_bucket(source: Any) -> Any:
    """The bucket a copy source (dict or string form) names."""
    return _source(source)[0]


def _source(source: Any) -> tuple[Any, Any]:
    """(bucket, key) of a copy source: the dict form, or the string form as botocore sends
    it (``bucket/key[?versionId=…]``, percent-encoded by botocore before this check runs).
    An access point's source (``arn:…:accesspoint/NAME/object/KEY``) is (its ARN, KEY)."""
    if isinstance(source, Mapping):
        return source.get("Bucket"), source.get("Key")
    if not isinstance(source, str):
        return None, None
    bare = _VERSION_SUFFIX.sub("", source)
    if bare.startswith("//") or any(mark in bare for mark in ("?", "#", ";")):
        # Stores parse these differently ('//bucket/key' as a URL's host, '?' as a query):
        # nothing we can classify, so nothing we allow.
        return None, None
    path = unquote(bare).lstrip("/")
    if path.startswith("arn:"):
        arn, found, key = path.partition("/object/")
        return (arn, key) if found else (path, None)
    bucket, _, key = path.partition("/")
    return bucket, key
