"""Every knob, read from ``PROVISIONER_*`` environment variables and validated once at start.

Each setting is declared once, as a field of :class:`Settings` (``model.py``): name, type, default, unit, area
and one line of documentation. Tenant settings are a family (``PROVISIONER_TENANT_<ID>_<FIELD>``) whose fields are
declared in ``tenants.py``. Parsing and validation (``Settings.from_env``) and the configuration reference in
docs/configuration.md (``python -m provisioner.settings --write docs/configuration.md``, checked by the tests) are
built from them.
"""

from __future__ import annotations

from provisioner.settings.declare import PREFIX, variables
from provisioner.settings.model import (
    MIN_HMAC_KEY_BYTES,
    STORE_KINDS,
    TOKENIZE_MODES,
    Settings,
    check_hmac_key,
    default_template,
    shown_value,
    unknown_variables,
)
from provisioner.settings.tenants import TENANT_FIELD_DECLARATIONS, TENANT_FIELDS

#: name → (default as documented, meaning), tenant fields as ``PROVISIONER_TENANT_<ID>_<FIELD>``.
DOCUMENTED: dict[str, tuple[str, str]] = {
    **{var.name: (var.shown_default, var.declared.doc) for var in variables(Settings)},
    **{fld.variable: (fld.default, fld.doc) for fld in TENANT_FIELD_DECLARATIONS},
}

__all__ = [
    "DOCUMENTED",
    "MIN_HMAC_KEY_BYTES",
    "PREFIX",
    "STORE_KINDS",
    "TENANT_FIELDS",
    "TOKENIZE_MODES",
    "Settings",
    "check_hmac_key",
    "default_template",
    "shown_value",
    "unknown_variables",
]
