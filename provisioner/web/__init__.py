"""provisioner.web (see DESIGN.md)."""
