"""metalflow: bare-metal provisioning engine."""

__version__ = "0.1.0"
