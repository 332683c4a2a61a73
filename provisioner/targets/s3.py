"""S3 as a provisioning target: the product's prefix and store user in the shared bucket (``storage/``).

The first target, cut out of the reconcilers without changing what they do: the same store calls in the same order.
The project's key and ``.env`` stay with the reconcilers (``reconcile/credentials.py``): they are the project's
credentials, and their rotation follows from what this target's policy changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from provisioner.logs import redact_text
from provisioner.names import BucketName, archive_prefix
from provisioner.storage.base import StoreAdmin
from provisioner.storage.policy import ReadGrant
from provisioner.targets.base import HeldGrant, Remember, TargetGrant, TargetOutcome, TargetProduct

#: The object ``probe`` asks the store about: any answer, "not found" included, means the store is reachable.
PROBE_OBJECT = ".provisioner-readyz"


def read_grants(grants: Sequence[TargetGrant]) -> list[ReadGrant]:
    """The store policy's read statements for ``grants`` (sorted, no duplicates)."""
    return sorted({ReadGrant(g.producer_namespace, g.output_port_namespace) for g in grants})


class S3Target:
    """The product's prefix ``<store name>/`` and store user ``dp-<store name>`` whose policy carries its reads."""

    name = "s3"

    def __init__(self, store: StoreAdmin, bucket: BucketName) -> None:
        self.store = store
        self.bucket = bucket

    def ensure(self, product: TargetProduct) -> TargetOutcome:
        """Bucket, prefix and user with exactly the product's reads; ``detail['user_created']`` for the key step."""
        out = TargetOutcome()
        namespace, store = product.namespace, self.store
        if store.ensure_bucket(self.bucket):
            out.step("bucket")
        # A product never recorded is new to the store too, unless an earlier attempt crashed mid-way: write
        # without looking first (three calls fewer), and fall back to the checks when the user already exists.
        if product.first_time:
            store.put_object(self.bucket, namespace.prefix, b"")  # the empty marker: rewriting it is harmless
            out.step("prefix")
        elif store.ensure_prefix(self.bucket, namespace):
            out.step("prefix")
        grants = read_grants(product.reads)
        created = product.first_time and store.create_user(self.bucket, namespace, grants)
        if created or store.ensure_user(self.bucket, namespace, grants):
            out.step("user")
        out.detail["user_created"] = created
        return out

    def converge_grants(
        self,
        consumer: TargetProduct,
        grants: Sequence[TargetGrant],
        held: Sequence[HeldGrant] = (),
        remember: Remember | None = None,
    ) -> TargetOutcome:
        """Rewrite the consumer user's policy from ``grants``: the whole policy in one write, so nothing is held
        apart from it (``held`` and ``remember`` are not needed: the grant decisions are S3's record)."""
        del held, remember
        out = TargetOutcome()
        if self.store.ensure_user(self.bucket, consumer.namespace, read_grants(grants)):
            out.step("policy")
        return out

    def clean_up(self, product: TargetProduct, *, delete_data: bool, held: Sequence[HeldGrant]) -> TargetOutcome:
        """Delete the user (keys and policies with it) and take the data out of reach.

        Data is deleted when ``delete_data`` is set; otherwise it moves to ``_archive/<store name>/<product id>/``,
        which no product policy reaches, so a later product with the same namespace starts from an empty prefix.
        Reads others held on the prefix live in their own policies: their access reconciles remove them.
        """
        del held
        out = TargetOutcome()
        namespace, store = product.namespace, self.store
        for key in store.list_keys(namespace):
            store.delete_key(namespace, key.access_key_id)
            out.step("key_deleted")
        if store.delete_user(namespace):
            out.step("user_deleted")
        if delete_data:
            deleted = store.delete_prefix(self.bucket, namespace)
            if deleted:
                out.detail["objects_deleted"] = deleted
                out.step("data_deleted")
        else:
            target = archive_prefix(namespace, product.product_id)
            moved = store.move_prefix(self.bucket, namespace, target)
            if moved:
                out.detail["objects_archived"] = moved
                out.detail["data_archive"] = f"s3://{self.bucket}/{target}"
                out.step("data_archived")
        return out

    def report(self, product: TargetProduct) -> Mapping[str, Any]:
        """The prefix marker and the user's keys as the store shows them."""
        namespace = product.namespace
        return {
            "prefix": f"s3://{self.bucket}/{namespace.prefix}",
            "prefix_exists": self.store.object_exists(self.bucket, namespace.prefix),
            "user": namespace.user_name,
            "keys": [k.access_key_id for k in self.store.list_keys(namespace)],
        }

    def probe(self) -> str:
        """``ok: …`` when the store answers about the bucket, else the error in one line."""
        try:
            self.store.object_exists(self.bucket, PROBE_OBJECT)
        except Exception as exc:  # a probe reports, it never raises
            return f"s3: cannot reach the store for bucket {self.bucket}: {_one_line(exc)}"
        return f"ok: s3 store answers for bucket {self.bucket}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(redact_text(str(exc)).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
