"""Settings every test shares."""

import os

from hypothesis import HealthCheck, settings

# Generation speed and per-example time depend on what else this 2-core machine runs (CI runs
# QEMU and PostgreSQL beside the unit tests): they are no property of the code under test.
settings.register_profile("metalflow", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Under CI a run must be repeatable: the same examples every time (a failure there is one anybody
# can reproduce), no example database carried over, and the blob to replay a failure printed.
settings.register_profile(
    "ci",
    parent=settings.get_profile("metalflow"),
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "metalflow")
