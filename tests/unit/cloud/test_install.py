"""The generated install template: valid Tinkerbell YAML that renders, per machine, into the
agent's image2disk (with the checksum) onto the first disk, the cloud-init datasource written
into its first partition for images with cloud-init, and a reboot."""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from hypothesis import given
from hypothesis import strategies as st

from metalflow.agent.actions import lookup
from metalflow.cloud.install import install_template, install_template_name
from metalflow.templates import check_template, render_template

METADATA = "http://192.0.2.1:50061"
MAC = "52:54:00:00:00:01"


@dataclass(frozen=True)
class Os:
    slug: str
    image_url: str | None
    image_checksum: str | None = None
    cloud_init: bool = True
    template: str | None = None


def hardware(*disks: str) -> dict[str, object]:
    return {"spec": {"disks": [{"device": device} for device in disks]}}


slugs = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}[a-z0-9]", fullmatch=True)
urls = st.from_regex(
    r"https?://[a-z0-9.-]{1,20}(:[0-9]{2,5})?/[A-Za-z0-9._/-]{1,40}", fullmatch=True
)
checksums = st.none() | st.text("0123456789abcdef", min_size=64, max_size=64).map(
    lambda digest: f"sha256:{digest}"
)
disks = st.sampled_from(["/dev/sda", "/dev/vda", "/dev/nvme0n1"])


@given(slugs, urls, checksums, st.booleans(), disks)
def test_it_renders_into_the_agents_builtin_actions(
    slug: str, url: str, checksum: str | None, cloud_init: bool, disk: str
) -> None:
    os_row = Os(slug, url, checksum, cloud_init)
    text = install_template(os_row, METADATA)
    assert check_template(text).name == f"os-{slug}"
    spec = render_template(text, hardware(disk), {"device_1": MAC})
    (task,) = spec.tasks
    assert task.worker == MAC
    actions = task.actions
    assert all(lookup(action.image) is not None for action in actions), "all built-ins"
    image = actions[0].environment
    assert image["IMG_URL"] == url and image["DEST_DISK"] == disk
    assert image.get("CHECKSUM") == checksum
    assert "COMPRESSED" not in image, "the agent detects the image's compression"
    assert [action.name for action in actions] == [
        "stream-image",
        *(["cloud-init-datasource"] if cloud_init else []),
        "reboot",
    ]
    if cloud_init:
        written = actions[1].environment
        partition = f"{disk}p1" if disk[-1].isdigit() else f"{disk}1"
        assert written["DEST_DISK"] == partition and written["FS_TYPE"] == "ext4"
        assert written["DEST_PATH"] == "/etc/cloud/cloud.cfg.d/90-metalflow.cfg"
        config = yaml.safe_load(written["CONTENTS"])
        assert config["datasource"]["Ec2"]["metadata_urls"] == [METADATA]
        assert config["datasource_list"][0] == "Ec2"


def test_the_template_name_is_the_oss_own_or_the_generated_one() -> None:
    assert install_template_name(Os("debian_12", "http://x/d.raw")) == "os-debian_12"
    assert install_template_name(Os("custom", None, template="mine")) == "mine"
