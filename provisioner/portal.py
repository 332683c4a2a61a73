"""provisioner.portal (see DESIGN.md)."""
