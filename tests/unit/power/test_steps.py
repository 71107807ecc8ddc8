"""Power job steps against a stand-in BMC on a stand-in clock: asked, verified by polling,
transient errors retried, a state never reached or a refusal ends the job with the BMC's words."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from hypothesis import given
from hypothesis import strategies as st

from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    FieldDoc,
    PowerAction,
    PowerError,
    PowerState,
    Probe,
    Unsupported,
)
from metalflow.power.steps import (
    NETBOOT,
    JobOutcome,
    Limits,
    Runner,
    Step,
    boot_from_disk,
    step_from,
)


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StandIn:
    """A BMC whose power changes `delay` seconds after it is asked (never, with None)."""

    clock: Clock
    state: PowerState = PowerState.OFF
    delay: float | None = 3.0
    transient: int = 0
    refuse: str | None = None
    asked: list[str] = field(default_factory=list)
    pending: tuple[float, PowerState] | None = None

    name: ClassVar[str] = "stand-in"
    fields: ClassVar[tuple[FieldDoc, ...]] = ()
    holds_workflows: ClassVar[bool] = True
    syncs_state: ClassVar[bool] = True
    default_timeout: ClassVar[float | None] = None

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        """Every address is a stand-in's."""

    def _fail(self, action: str) -> None:
        if self.refuse == action:
            raise PowerError("stand-in", "bmc1", action, "Invalid data field in request")
        if self.transient:
            self.transient -= 1
            raise PowerError("stand-in", "bmc1", action, "no answer", transient=True)

    def power_state(self) -> PowerState:
        self._fail("status")
        if self.pending is not None and self.clock.now >= self.pending[0]:
            self.state, self.pending = self.pending[1], None
        return self.state

    def set_power(self, action: PowerAction) -> None:
        self._fail(str(action))
        self.asked.append(str(action))
        target = (
            PowerState.OFF if action in (PowerAction.OFF, PowerAction.SOFT_OFF) else PowerState.ON
        )
        if action in (PowerAction.RESET, PowerAction.CYCLE) and self.state is PowerState.ON:
            self.state = PowerState.OFF  # goes down, comes back after the delay
        if self.delay is not None:
            self.pending = (self.clock.now + self.delay, target)

    def set_boot_device(self, request: BootRequest) -> None:
        self._fail("boot")
        self.asked.append(f"boot {request.device} {'persistent' if request.persistent else 'once'}")

    def insert_media(self, url: str) -> None:
        raise Unsupported("stand-in", "bmc1", "insert-media", "no virtual media")

    def eject_media(self) -> None:
        raise Unsupported("stand-in", "bmc1", "eject-media", "no virtual media")

    def probe(self) -> Probe:
        return Probe("stand-in", True, True, False)

    def close(self) -> None:
        pass


def run(bmc: StandIn, steps: tuple[Step, ...], **limits: Any) -> tuple[JobOutcome, list[str]]:
    kinds: list[str] = []
    runner = Runner(
        bmc,
        Limits(**limits),
        report=lambda kind, data: kinds.append(kind),
        clock=bmc.clock,
        sleep=bmc.clock.sleep,
    )
    return runner.run(steps), kinds


def test_netboot_powers_off_sets_pxe_once_and_powers_on_verified() -> None:
    bmc = StandIn(Clock(), state=PowerState.ON)
    outcome, kinds = run(bmc, NETBOOT)
    assert outcome.ok, outcome.message
    assert bmc.asked == ["off", "boot pxe once", "on"]
    assert outcome.power_state is PowerState.ON and bmc.state is PowerState.ON
    assert kinds.count("power.step.succeeded") == 3
    assert [round(s.seconds) for s in outcome.steps] == [3, 0, 3], "verified by polling"


def test_a_state_already_reached_is_not_asked_again() -> None:
    bmc = StandIn(Clock(), state=PowerState.OFF)
    outcome, _ = run(bmc, (Step(power=PowerAction.OFF),))
    assert outcome.ok and bmc.asked == [] and outcome.steps[0].message == "already off"


def test_cycle_of_a_machine_that_is_off_powers_it_on() -> None:
    bmc = StandIn(Clock(), state=PowerState.OFF)
    outcome, _ = run(bmc, (Step(power=PowerAction.CYCLE),))
    assert outcome.ok and bmc.asked == ["on"]


def test_a_state_never_reached_fails_after_the_timeout_naming_both_states() -> None:
    bmc = StandIn(Clock(), state=PowerState.OFF, delay=None)
    outcome, kinds = run(bmc, (Step(power=PowerAction.ON),), timeout=30)
    assert not outcome.ok
    assert "still reports off 30s after on was asked (wanted on)" in outcome.message
    assert 30 <= bmc.clock.now <= 32
    assert kinds[-1] == "power.step.failed"


def test_a_refusal_fails_at_once_with_the_bmcs_message_and_stops_the_job() -> None:
    bmc = StandIn(Clock(), state=PowerState.ON, refuse="boot")
    outcome, _ = run(bmc, NETBOOT)
    assert not outcome.ok
    assert outcome.message == "boot device pxe (once, efi): Invalid data field in request"
    assert bmc.asked == ["off"], "nothing after the failed step"


@given(transient=st.integers(0, 6), retries=st.integers(0, 4))
def test_transient_errors_are_retried_up_to_the_limit(transient: int, retries: int) -> None:
    bmc = StandIn(Clock(), state=PowerState.OFF, transient=transient)
    outcome, kinds = run(bmc, (Step(power=PowerAction.ON),), retries=retries)
    assert outcome.ok == (transient <= retries)
    assert kinds.count("power.step.retrying") == min(transient, retries)
    if outcome.ok:
        assert bmc.asked == ["on"], "a retry after the request only polls"
        assert bmc.state is PowerState.ON


def test_cancelled_between_requests() -> None:
    bmc = StandIn(Clock(), state=PowerState.ON)
    runner = Runner(
        bmc,
        Limits(),
        report=lambda kind, data: None,
        cancelled=lambda: bool(bmc.asked),
        clock=bmc.clock,
        sleep=bmc.clock.sleep,
    )
    outcome = runner.run(NETBOOT)
    assert not outcome.ok and outcome.message == "cancelled"
    assert bmc.asked == ["off"]


@given(
    steps=st.lists(
        st.one_of(
            st.sampled_from(list(PowerAction)).map(lambda a: Step(power=a)),
            st.builds(
                lambda d, p, e: Step(boot=BootRequest(d, persistent=p, efi=e)),
                st.sampled_from(list(BootDevice)),
                st.booleans(),
                st.booleans(),
            ),
        )
    )
)
def test_steps_survive_their_json_form(steps: list[Step]) -> None:
    assert [step_from(step.as_dict()) for step in steps] == steps


def test_boot_from_disk_reboots_only_when_asked() -> None:
    assert [s.describe() for s in boot_from_disk(efi=True, reboot=False)] == [
        "boot device disk (persistent, efi)"
    ]
    assert boot_from_disk(efi=False, reboot=True)[1] == Step(power=PowerAction.RESET)
    assert Bmc("ipmi", "h", password="secret").__repr__().count("secret") == 0


def test_timeouts_come_from_the_machine_then_its_driver_then_the_defaults() -> None:
    from metalflow.power.runner import limits_for

    assert limits_for("redfish", {}).timeout == Limits().timeout == 120
    assert limits_for("qemu", {}).timeout == 30
    assert limits_for("qemu", {"power_timeout": "600"}).timeout == 600
    assert limits_for("ipmi", {"soft_off_timeout": 900}).soft_off_timeout == 900
