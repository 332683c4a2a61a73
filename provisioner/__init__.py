"""provisioner: Data Product Portal events in, scoped storage, projects and grants out."""

__version__ = "0.1.0"
