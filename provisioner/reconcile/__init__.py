"""provisioner.reconcile (see DESIGN.md)."""
