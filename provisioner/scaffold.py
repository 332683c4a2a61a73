"""provisioner.scaffold (see DESIGN.md)."""
