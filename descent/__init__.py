"""The `descent` CLI and Python SDK (see ../shared/DESIGN.md); arrives with the service."""
