"""provisioner.tokenize (see DESIGN.md)."""
