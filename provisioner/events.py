"""provisioner.events (see DESIGN.md)."""
