"""The AWS-style policy document of a product's store user, and a normal form to compare documents.

A product user may read, write and list its own prefix ``<bucket>/<namespace>/`` and nothing else, plus
read and list (never write) each prefix it was granted. Listing is scoped with ``s3:ListBucket`` and an
``s3:prefix`` condition, so the user cannot list the bucket root or another product's prefix. The same
document serves the AWS IAM API (AWS, SeaweedFS, moto) and MinIO/RustFS canned policies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from provisioner.names import BucketName, Namespace

POLICY_VERSION = "2012-10-17"

# Object actions on the product's own prefix. Multipart uploads are authorised as s3:PutObject, except
# abort, which big writers (DuckDB, boto3's transfer manager) call on failure. (s3:ListMultipartUploadParts
# is left out: SeaweedFS 4.48 rejects the whole document when it sees it.)
OWN_OBJECT_ACTIONS = (
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:PutObject",
)
READ_OBJECT_ACTIONS = ("s3:GetObject",)
# Clients ask for the bucket's region before anything else (boto3 redirects, DuckDB httpfs).
BUCKET_ACTIONS = ("s3:GetBucketLocation",)

_LIST_FIELDS = ("Action", "NotAction", "Resource", "NotResource")


def bucket_arn(bucket: BucketName) -> str:
    """The ARN of ``bucket`` itself (for bucket-level actions such as ListBucket)."""
    return f"arn:aws:s3:::{bucket}"


def prefix_arn(bucket: BucketName, namespace: Namespace) -> str:
    """The ARN matching every object under ``<namespace>/`` in ``bucket`` (the marker object included)."""
    return f"arn:aws:s3:::{bucket}/{namespace.prefix}*"


def list_prefixes(namespace: Namespace) -> list[str]:
    """The ``s3:prefix`` values that let a user list ``<namespace>/`` and below, and nothing beside it."""
    return [namespace.prefix, f"{namespace.prefix}*"]


def grant_namespaces(namespace: Namespace, read_prefixes: Iterable[Namespace]) -> list[Namespace]:
    """Read grants sorted and deduplicated, without the product's own namespace (already covered)."""
    return sorted({Namespace(p) for p in read_prefixes if p != namespace})


def product_policy(bucket: BucketName, namespace: Namespace, read_prefixes: Iterable[Namespace] = ()) -> dict[str, Any]:
    """The policy of user ``dp-<namespace>``: own prefix read/write/list, granted prefixes read/list only."""
    grants = grant_namespaces(namespace, read_prefixes)
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnPrefixObjects",
            "Effect": "Allow",
            "Action": sorted(OWN_OBJECT_ACTIONS),
            "Resource": [prefix_arn(bucket, namespace)],
        },
        {
            "Sid": "OwnPrefixList",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [bucket_arn(bucket)],
            "Condition": {"StringLike": {"s3:prefix": list_prefixes(namespace)}},
        },
        {
            "Sid": "BucketLocation",
            "Effect": "Allow",
            "Action": sorted(BUCKET_ACTIONS),
            "Resource": [bucket_arn(bucket)],
        },
    ]
    if grants:
        statements.append(
            {
                "Sid": "GrantedPrefixesRead",
                "Effect": "Allow",
                "Action": sorted(READ_OBJECT_ACTIONS),
                "Resource": [prefix_arn(bucket, g) for g in grants],
            }
        )
        statements.append(
            {
                "Sid": "GrantedPrefixesList",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket_arn(bucket)],
                "Condition": {"StringLike": {"s3:prefix": [p for g in grants for p in list_prefixes(g)]}},
            }
        )
    return {"Version": POLICY_VERSION, "Statement": statements}


def policy_json(document: Mapping[str, Any]) -> str:
    """The document as compact JSON with sorted keys: what we send to a store."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def normalize_policy(document: Mapping[str, Any] | str) -> str:
    """A canonical JSON form for "already equal" checks.

    Stores hand documents back reshaped: a one-element list becomes a string, order changes, ``Sid`` may be
    dropped. None of that changes meaning, so the normal form sorts lists, turns scalars into lists and drops
    ``Sid``.
    """
    doc = json.loads(document) if isinstance(document, str) else dict(document)
    raw_statements = doc.get("Statement", [])
    if isinstance(raw_statements, Mapping):
        raw_statements = [raw_statements]
    statements = [_normalize_statement(s) for s in raw_statements]
    statements.sort(key=lambda s: json.dumps(s, sort_keys=True))
    return json.dumps({"Version": doc.get("Version", POLICY_VERSION), "Statement": statements}, sort_keys=True)


def policies_equal(a: Mapping[str, Any] | str, b: Mapping[str, Any] | str) -> bool:
    """True when two policy documents mean the same (see :func:`normalize_policy`)."""
    return normalize_policy(a) == normalize_policy(b)


def _normalize_statement(statement: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in statement.items():
        if key == "Sid":
            continue
        if key in _LIST_FIELDS:
            out[key] = _sorted_list(value)
        elif key == "Condition" and isinstance(value, Mapping):
            out[key] = {
                op: {k: _sorted_list(v) for k, v in sorted(dict(cond).items())}
                for op, cond in sorted(value.items())
                if isinstance(cond, Mapping)
            }
        else:
            out[key] = value
    return out


def _sorted_list(value: Any) -> list[Any]:
    values = value if isinstance(value, list | tuple) else [value]
    return sorted(set(values), key=str)
