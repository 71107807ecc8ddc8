"""Settings every test shares."""

from hypothesis import HealthCheck, settings

# Generation speed and per-example time depend on what else this 2-core machine runs (CI runs
# QEMU and PostgreSQL beside the unit tests): they are no property of the code under test.
settings.register_profile("metalflow", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("metalflow")
