"""The integration tests' old import path for tests.manifests."""

from tests.manifests import simple_template

__all__ = ["simple_template"]
