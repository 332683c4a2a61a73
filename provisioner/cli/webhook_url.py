"""`provisioner webhook-url`: the v2 webhook URL (with its signed token) to paste into the portal."""

from __future__ import annotations

import argparse
from typing import Any

from provisioner.errors import SettingsError
from provisioner.settings import Settings
from provisioner.web.auth import standard_webhooks_key, url_token


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add `webhook-url`."""
    p = subparsers.add_parser(
        "webhook-url",
        help="print the URL to paste into the portal's WEBHOOK_V2_URL",
        description="Print the v2 webhook URL with a token signed by PROVISIONER_WEBHOOK_SECRET. The portal's v2 "
        "sender cannot sign, so the token in the URL is its credential. Changing the secret revokes every token; "
        "PROVISIONER_WEBHOOK_TOKEN_MAX_AGE limits a token's age.",
    )
    p.add_argument(
        "--base", required=True, help="the provisioner's address as the portal reaches it, e.g. http://provisioner:8090"
    )
    p.add_argument(
        "--standard-webhooks-key",
        action="store_true",
        help="print instead the whsec_ key for senders that sign with Standard Webhooks headers",
    )
    p.set_defaults(func=_webhook_url)


def _webhook_url(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.webhook_secret is None:
        raise SettingsError("PROVISIONER_WEBHOOK_SECRET is not set: a webhook URL needs a secret to sign its token")
    if args.standard_webhooks_key:
        print(standard_webhooks_key(settings.webhook_secret))
        return 0
    base = args.base.rstrip("/")
    if "://" not in base:
        raise SettingsError(f"--base {args.base!r} is not a URL: use e.g. http://provisioner:8090")
    print(f"{base}/webhooks/portal/v2?token={url_token(settings.webhook_secret)}")
    return 0
