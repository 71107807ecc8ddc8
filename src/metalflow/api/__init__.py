"""HTTP API assembly: each domain contributes its router; one place maps errors to statuses."""
