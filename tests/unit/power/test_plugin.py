"""A driver from another package's `metalflow.power` entry point is a driver like metalflow's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from metalflow.inventory.schemas import BmcSpec
from metalflow.power import driver
from metalflow.power.driver import Bmc, FieldDoc
from metalflow.power.runner import limits_for


class PluginDriver:
    """What a third-party package would register."""

    name: ClassVar[str] = "plugin"
    fields: ClassVar[tuple[FieldDoc, ...]] = ()
    holds_workflows: ClassVar[bool] = True
    syncs_state: ClassVar[bool] = True
    default_timeout: ClassVar[float | None] = 7.0

    def __init__(self, bmc: Bmc) -> None:
        self.bmc = bmc

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        """Anything goes."""


def _clear() -> None:
    driver._registered.cache_clear()
    driver.driver_class.cache_clear()


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution whose entry point names PluginDriver."""
    info = tmp_path / "metalflow_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: metalflow-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[metalflow.power]\nplugin = {__name__}:PluginDriver\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _clear()
    yield
    monkeypatch.undo()
    _clear()


def test_a_plugin_driver_is_accepted_in_a_machine_spec(plugin: None) -> None:
    assert "plugin" in driver.driver_names()
    assert BmcSpec(driver="plugin", address="192.0.2.7").driver == "plugin"
    assert driver.driver_class("plugin").name == PluginDriver.name
    assert limits_for("plugin", {}).timeout == 7.0


def test_an_unknown_driver_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown driver 'plugin'; known: fake, ipmi"):
        BmcSpec(driver="plugin", address="192.0.2.7")
