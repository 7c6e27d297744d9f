"""Paths as the sandboxed program sees them: resolution in its view of the filesystem."""
