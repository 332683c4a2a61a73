"""``python -m provisioner.settings --markdown | --write FILE | --check FILE``: the configuration reference."""

from provisioner.settings.reference import main

raise SystemExit(main())
