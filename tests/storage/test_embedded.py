"""The embedded default store: SeaweedFS when it can start, moto with a loud warning when it cannot."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from provisioner.errors import StorageUnavailable
from provisioner.names import BucketName, Namespace
from provisioner.storage import build_store
from provisioner.storage import embedded as embedded_module
from provisioner.storage.embedded import start_embedded_store
from tests.fixtures.s3 import free_port


@pytest.mark.seaweedfs
def test_seaweedfs_admin_identity_is_private_and_reused(seaweedfs_store: embedded_module.EmbeddedStore) -> None:
    assert seaweedfs_store.backend == "seaweedfs"
    config = Path(str(seaweedfs_store.data_dir)) / "s3.json"
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads(config.read_text())["identities"][0]["credentials"][0]["accessKey"] == seaweedfs_store.access_key


def test_falls_back_to_moto_with_a_warning_when_seaweedfs_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embedded_module, "weed_binary", lambda: None)
    with caplog.at_level(logging.WARNING, logger="provisioner.storage.embedded"):
        store = start_embedded_store(tmp_path, free_port(), timeout=30)
    try:
        assert store.backend == "moto"
        fallback = [r for r in caplog.records if getattr(r, "event", "") == "storage.embedded.fallback"]
        assert fallback and "weed" in fallback[0].fields["reason"]  # type: ignore[attr-defined]
        admin = build_store(
            store.kind,
            endpoint=store.endpoint,
            access_key=store.access_key,
            secret_key=store.secret_key,
            region=store.region,
        )
        bucket, ns = BucketName("fallback-bkt"), Namespace("fallback")
        assert admin.ensure_bucket(bucket) and admin.ensure_user(bucket, ns)
        assert admin.create_key(ns).secret_key
    finally:
        store.stop()
    assert store.process is not None and store.process.poll() is not None


def test_a_busy_port_is_reported_not_silently_reused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StorageUnavailable, match=f"{port} is already in use"):
            start_embedded_store(tmp_path, port)
