"""The default install template of an operating system that names none (pure).

Written from the templates the sandbox and the end-to-end suite install their test OS with
(sandbox/run.py `demo_template`, tests/manifests.py TINKERBELL_STACK) and the environment the
agent's built-in actions read (agent/actions/image.py `image2disk`: IMG_URL, DEST_DISK,
CHECKSUM, COMPRESSED left out so the format is detected; agent/actions/disk.py `writefile`:
DEST_DISK, FS_TYPE, DEST_PATH, CONTENTS, MODE). Tinkerbell's own examples bake the metadata
service's address into the template the same way: the template is stored once per OS and
rendered per machine against its hardware map.

Steps: image2disk streams the image (checked against its sha256) onto the machine's first disk;
for an image that runs cloud-init, writefile drops a datasource config into the image's first
partition (ext4, the root of Debian's and Ubuntu's cloud images) pointing cloud-init's EC2
datasource at metalflow's metadata service, as Packet did; then reboot into it. An image laid
out otherwise names its own template.
"""

from __future__ import annotations

from typing import Any, Protocol

import yaml

TEMPLATE_PREFIX = "os-"
IMAGE2DISK = "quay.io/tinkerbell/actions/image2disk:v1.0.0"
WRITEFILE = "quay.io/tinkerbell/actions/writefile:v1.0.0"
REBOOT = "quay.io/tinkerbell/actions/reboot:v1.0.0"
ROOT_PARTITION = 1
ROOT_FS = "ext4"
DATASOURCE_PATH = "/etc/cloud/cloud.cfg.d/90-metalflow.cfg"
FIRST_DISK = "{{ index .Hardware.Disks 0 }}"
IMAGE_TIMEOUT = 3600
GLOBAL_TIMEOUT = 5400


class Installable(Protocol):
    """What of an operating system (cloud.tables.OperatingSystem) its install depends on."""

    @property
    def slug(self) -> str: ...
    @property
    def template(self) -> str | None: ...
    @property
    def image_url(self) -> str | None: ...
    @property
    def image_checksum(self) -> str | None: ...
    @property
    def cloud_init(self) -> bool: ...


def generated_name(slug: str) -> str:
    return f"{TEMPLATE_PREFIX}{slug}"


def install_template_name(os_row: Installable) -> str:
    """The template a device of this OS is installed with: its own, else the generated one."""
    return os_row.template or generated_name(os_row.slug)


def datasource_config(metadata_url: str) -> str:
    """cloud-init's configuration: the EC2 datasource at metalflow's metadata service
    (`strict_id: false`: the server's DMI does not say EC2)."""
    config = {
        "datasource_list": ["Ec2", "None"],
        "datasource": {"Ec2": {"metadata_urls": [metadata_url], "strict_id": False}},
    }
    return yaml.safe_dump(config, sort_keys=False)


def install_template(os_row: Installable, metadata_url: str) -> str:
    """The Tinkerbell template text that installs `os_row` (it must have an image_url)."""
    if not os_row.image_url:
        raise ValueError(f"operating system {os_row.slug} has no image_url to install from")
    image_env: dict[str, Any] = {"IMG_URL": os_row.image_url, "DEST_DISK": FIRST_DISK}
    if os_row.image_checksum:
        image_env["CHECKSUM"] = os_row.image_checksum
    actions: list[dict[str, Any]] = [
        {
            "name": "stream-image",
            "image": IMAGE2DISK,
            "timeout": IMAGE_TIMEOUT,
            "environment": image_env,
        }
    ]
    if os_row.cloud_init:
        actions.append(
            {
                "name": "cloud-init-datasource",
                "image": WRITEFILE,
                "timeout": 120,
                "environment": {
                    "DEST_DISK": f"{{{{ formatPartition ( index .Hardware.Disks 0 )"
                    f" {ROOT_PARTITION} }}}}",
                    "FS_TYPE": ROOT_FS,
                    "DEST_PATH": DATASOURCE_PATH,
                    "CONTENTS": datasource_config(metadata_url),
                    "MODE": "0644",
                },
            }
        )
    actions.append({"name": "reboot", "image": REBOOT, "timeout": 60})
    name = generated_name(os_row.slug)
    document = {
        "version": "0.1",
        "name": name,
        "global_timeout": GLOBAL_TIMEOUT,
        "tasks": [{"name": "os-installation", "worker": "{{.device_1}}", "actions": actions}],
    }
    return yaml.safe_dump(document, sort_keys=False, width=1000)
