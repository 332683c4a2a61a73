"""Provisioning targets: the places a data product's resources live (S3 first, BigQuery second).

Every target implements ``base.Target``; the decision layer (``reconcile/targets.py``) calls them. A target is an
adapter: it receives plain values and decides nothing about who may read what (that comes in as grants computed from
the portal's current approvals). Client libraries of a target are imported lazily, inside its module, so the core
install never needs them.
"""

from __future__ import annotations

#: Every target this build knows, as ``PROVISIONER_TARGETS`` names them.
TARGET_NAMES = ("s3", "bigquery")
