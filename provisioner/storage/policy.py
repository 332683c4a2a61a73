"""The AWS-style policy document of a product's store user, and a normal form to compare documents.

A product user may read, write and list its own prefix ``<bucket>/<namespace>/`` and nothing else, plus read and
list (never write) the folder of each output port it was granted: ``<producer>/published/<output port>/``. The
producer's ``raw/``, its other ports and the rest of its prefix stay out of reach. Listing is scoped with
``s3:ListBucket`` and an ``s3:prefix`` condition, so the user cannot list the bucket root or anything beside what it
may read. The same document serves the AWS IAM API (AWS, SeaweedFS, moto) and MinIO/RustFS canned policies.

AWS caps a user's inline policies at 2,048 characters (whitespace not counted): the document is built compact and
:func:`product_policy` raises :class:`PolicyTooLarge` rather than ever sending a policy with fewer grants than asked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from provisioner.errors import PermanentError
from provisioner.names import BucketName, Namespace

POLICY_VERSION = "2012-10-17"
# AWS IAM: "The size of each inline policy cannot exceed 2,048 characters for a user" (whitespace not counted).
# Kept on every store, so a site can move between stores without a consumer losing grants on the way.
INLINE_POLICY_LIMIT = 2048
PUBLISHED = "published/"

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
# A product key never administers users or keys, its own included. AWS denies IAM calls that no policy allows; the
# explicit Deny also wins over any broader policy attached to the user later. Stores that accept only "Allow"
# statements or only their own action names (SeaweedFS, MinIO/RustFS) take the document without it.
DENY_IAM_STATEMENT: dict[str, Any] = {"Sid": "NoIam", "Effect": "Deny", "Action": ["iam:*"], "Resource": ["*"]}

_LIST_FIELDS = ("Action", "NotAction", "Resource", "NotResource")


class PolicyTooLarge(PermanentError):
    """The product user's policy would exceed the store's inline policy limit: fewer grants must be asked for."""


@dataclass(frozen=True, order=True)
class ReadGrant:
    """Read access to one output port of a producer: ``<producer prefix>published/<output port folder>/``."""

    producer: Namespace
    output_port: Namespace

    @property
    def prefix(self) -> str:
        """The key prefix the grant opens, with its trailing slash (``sales/published/orders/``)."""
        return f"{self.producer.prefix}{PUBLISHED}{self.output_port.prefix}"

    def location(self, bucket: BucketName) -> str:
        """``<bucket>/<prefix>``: how a project's .env names the grant in ``S3_READ_PREFIXES``."""
        return f"{bucket}/{self.prefix}"


def bucket_arn(bucket: BucketName) -> str:
    """The ARN of ``bucket`` itself (for bucket-level actions such as ListBucket)."""
    return f"arn:aws:s3:::{bucket}"


def prefix_arn(bucket: BucketName, namespace: Namespace) -> str:
    """The ARN matching every object under ``<namespace>/`` in ``bucket`` (the marker object included)."""
    return f"arn:aws:s3:::{bucket}/{namespace.prefix}*"


def grant_arn(bucket: BucketName, grant: ReadGrant) -> str:
    """The ARN matching every object of a granted output port folder."""
    return f"arn:aws:s3:::{bucket}/{grant.prefix}*"


def list_prefixes(namespace: Namespace) -> list[str]:
    """The ``s3:prefix`` values that let a user list ``<namespace>/`` and below, and nothing beside it."""
    return [namespace.prefix, f"{namespace.prefix}*"]


def grant_list_prefix(grant: ReadGrant) -> str:
    """The one ``s3:prefix`` pattern of a grant: the port folder and below (``*`` also matches nothing)."""
    return f"{grant.prefix}*"


def own_grants(namespace: Namespace, grants: Iterable[ReadGrant]) -> list[ReadGrant]:
    """Grants sorted and deduplicated, without those on the product's own prefix (already covered)."""
    return sorted({g for g in grants if g.producer != namespace})


def product_policy(
    bucket: BucketName,
    namespace: Namespace,
    grants: Iterable[ReadGrant] = (),
    *,
    deny_iam: bool = False,
    limit: int | None = INLINE_POLICY_LIMIT,
) -> dict[str, Any]:
    """The policy of the user of ``namespace``: own prefix read/write/list, granted port folders read/list only.

    ``deny_iam`` adds the explicit Deny of every IAM action (for stores that accept Deny statements and IAM action
    names: AWS, moto). Raises :class:`PolicyTooLarge` when the compact document is over ``limit`` characters.
    """
    granted = own_grants(namespace, grants)
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
    if granted:
        statements.append(
            {
                "Sid": "GrantedPortsRead",
                "Effect": "Allow",
                "Action": sorted(READ_OBJECT_ACTIONS),
                "Resource": [grant_arn(bucket, g) for g in granted],
            }
        )
        statements.append(
            {
                "Sid": "GrantedPortsList",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket_arn(bucket)],
                "Condition": {"StringLike": {"s3:prefix": [grant_list_prefix(g) for g in granted]}},
            }
        )
    if deny_iam:
        statements.append(dict(DENY_IAM_STATEMENT))
    document = {"Version": POLICY_VERSION, "Statement": statements}
    size = policy_size(document)
    if limit is not None and size > limit:
        raise PolicyTooLarge(
            f"the store policy of {namespace.user_name} with {len(granted)} read grant(s) would be {size} characters, "
            f"over the {limit}-character inline policy limit: it was not changed; fewer output ports can be granted "
            "to this product (see docs/storage.md, 'How many grants fit')"
        )
    return document


def policy_size(document: Mapping[str, Any]) -> int:
    """The size AWS counts for an inline policy: characters of the document, whitespace left out."""
    return len(policy_json(document))


def fits(
    bucket: BucketName,
    namespace: Namespace,
    grants: Iterable[ReadGrant],
    *,
    deny_iam: bool = False,
    limit: int = INLINE_POLICY_LIMIT,
) -> bool:
    """True when the policy with ``grants`` stays within ``limit`` characters."""
    try:
        product_policy(bucket, namespace, grants, deny_iam=deny_iam, limit=limit)
    except PolicyTooLarge:
        return False
    return True


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
