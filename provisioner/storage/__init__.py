"""provisioner.storage (see DESIGN.md)."""
