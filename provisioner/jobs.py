"""provisioner.jobs (see DESIGN.md)."""
