"""Real-shaped Tinkerbell templates rendered end to end."""

from __future__ import annotations

from typing import Any

import pytest

from metalflow.templates import (
    MAX_RENDERED_BYTES,
    TemplateError,
    WorkflowSpec,
    check_template,
    render_template,
)

UBUNTU = """\
version: "0.1"
name: ubuntu-jammy
global_timeout: 9800
tasks:
  - name: "os-installation"
    worker: "{{.device_1}}"
    volumes:
      - /dev:/dev
      - /dev/console:/dev/console
      - /lib/firmware:/lib/firmware:ro
    actions:
      - name: "stream-ubuntu-image"
        image: quay.io/tinkerbell/actions/image2disk:v1.0.0
        timeout: 9600
        environment:
          DEST_DISK: {{ index .Hardware.Disks 0 }}
          IMG_URL: "http://10.1.1.11:8080/jammy-server-cloudimg-amd64.raw.gz"
          COMPRESSED: true
      - name: "write-netplan"
        image: quay.io/tinkerbell/actions/writefile:v1.0.0
        timeout: 90
        environment:
          DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
          DEST_PATH: /etc/netplan/config.yaml
          UID: 0
          GID: 0
          MODE: 0600
          DIRMODE: 0755
          CONTENTS: |
            network:
              version: 2
              renderer: networkd
              ethernets:
                id0:
                  match:
                    macaddress: {{ (index .Hardware.Interfaces 0).DHCP.MAC }}
                  addresses:
                    - {{ (index .Hardware.Interfaces 0).DHCP.IP.Address }}/24
                  nameservers:
                    addresses: [{{ join ", " (index .Hardware.Interfaces 0).DHCP.NameServers }}]
      - name: "write-hostname"
        image: quay.io/tinkerbell/actions/writefile:v1.0.0
        timeout: 90
        environment:
          DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
          DEST_PATH: /etc/hostname
          CONTENTS: |
            {{ .Hardware.Metadata.Instance.Hostname }}
      - name: "add-tink-cloud-init-config"
        image: quay.io/tinkerbell/actions/cexec:v1.0.0
        timeout: 90
        environment:
          BLOCK_DEVICE: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
          CHROOT: y
          DEFAULT_INTERPRETER: "/bin/sh -c"
          CMD_LINE: "echo {{ .hardware.metadata.name }} > /etc/machine-name"
      - name: "kexec-ubuntu"
        image: quay.io/tinkerbell/actions/kexec:v1.0.0
        timeout: 90
        pid: host
        environment:
          BLOCK_DEVICE: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
"""

HARDWARE: dict[str, Any] = {
    "metadata": {"name": "sm01", "namespace": "tink-system", "labels": {"rack": "r1"}},
    "spec": {
        "disks": [{"device": "/dev/nvme0n1"}, {"device": "/dev/sda"}],
        "interfaces": [
            {
                "dhcp": {
                    "mac": "3c:ec:ef:4c:4f:54",
                    "hostname": "sm01",
                    "arch": "x86_64",
                    "uefi": True,
                    "lease_time": 86400,
                    "name_servers": ["1.1.1.1", "8.8.8.8"],
                    "ip": {
                        "address": "10.1.1.21",
                        "netmask": "255.255.255.0",
                        "gateway": "10.1.1.1",
                    },
                },
                "netboot": {"allowPXE": True, "allowWorkflow": True},
            }
        ],
        "metadata": {
            "facility": {"facility_code": "onprem"},
            "instance": {"hostname": "sm01", "id": "3c:ec:ef:4c:4f:54"},
        },
        "userData": "#cloud-config\n",
    },
}
MAP = {"device_1": "3c:ec:ef:4c:4f:54"}


def render(text: str, hardware_map: dict[str, str] | None = None) -> WorkflowSpec:
    return render_template(text, HARDWARE, MAP if hardware_map is None else hardware_map)


def env(spec: WorkflowSpec, action: int) -> dict[str, str]:
    return dict(spec.tasks[0].actions[action].environment)


def test_ubuntu_template_renders_like_tink() -> None:
    spec = render(UBUNTU)
    assert (spec.version, spec.name, spec.global_timeout) == ("0.1", "ubuntu-jammy", 9800)
    task = spec.tasks[0]
    assert task.worker == "3c:ec:ef:4c:4f:54"
    assert [a.name for a in task.actions] == [
        "stream-ubuntu-image",
        "write-netplan",
        "write-hostname",
        "add-tink-cloud-init-config",
        "kexec-ubuntu",
    ]
    assert env(spec, 0)["DEST_DISK"] == "/dev/nvme0n1"
    assert env(spec, 0)["COMPRESSED"] == "true"
    netplan = env(spec, 1)
    assert netplan["DEST_DISK"] == "/dev/nvme0n1p1"
    assert (netplan["UID"], netplan["GID"], netplan["MODE"], netplan["DIRMODE"]) == (
        "0",
        "0",
        "0600",
        "0755",
    )
    assert "macaddress: 3c:ec:ef:4c:4f:54" in netplan["CONTENTS"]
    assert "- 10.1.1.21/24" in netplan["CONTENTS"]
    assert "addresses: [1.1.1.1, 8.8.8.8]" in netplan["CONTENTS"]
    assert env(spec, 2)["CONTENTS"] == "sm01\n"
    assert env(spec, 3)["CMD_LINE"] == "echo sm01 > /etc/machine-name"
    kexec = task.actions[4]
    assert kexec.pid == "host"
    assert kexec.terminal is True
    assert not task.actions[0].terminal
    assert kexec.volumes == (
        "/dev:/dev",
        "/dev/console:/dev/console",
        "/lib/firmware:/lib/firmware:ro",
    )


def test_check_template_uses_probes_for_unknown_data() -> None:
    spec = check_template(UBUNTU)
    assert spec.name == "ubuntu-jammy"
    assert len(spec.tasks[0].actions) == 5
    assert spec.tasks[0].worker.startswith("probe-")
    assert env(spec, 0)["COMPRESSED"] == "true"


def test_check_template_probe_in_image_stays_valid() -> None:
    text = UBUNTU.replace("quay.io/tinkerbell/actions/kexec:v1.0.0", "{{.registry}}/kexec:v1")
    assert check_template(text).tasks[0].actions[4].image == "probe-registry/kexec:v1"


def test_missing_hardware_map_key_names_key_and_line() -> None:
    with pytest.raises(TemplateError) as err:
        render(UBUNTU, {"device_2": "x"})
    assert err.value.field == "template"
    assert err.value.line == 6
    assert '"device_1"' in str(err.value)
    assert str(err.value).startswith("line 6: ")


def test_hardware_map_cannot_shadow_hardware() -> None:
    text = UBUNTU.replace("{{.device_1}}", "{{ index .Hardware.Disks 1 }}")
    spec = render(text, {"device_1": "x", "Hardware": "evil", "hardware": "evil"})
    assert spec.tasks[0].worker == "/dev/sda"


def test_go_field_names_resolve_onto_json_keys() -> None:
    text = UBUNTU.replace(
        "{{.device_1}}",
        "{{ .Hardware.Metadata.Facility.FacilityCode }}-{{ .Hardware.Metadata.Instance.ID }}"
        "-{{ (index .Hardware.Interfaces 0).Netboot.AllowPXE }}"
        "-{{ (index .Hardware.Interfaces 0).DHCP.LeaseTime }}",
    )
    assert render(text).tasks[0].worker == "onprem-3c:ec:ef:4c:4f:54-true-86400"


def test_lowercase_hardware_is_the_whole_object() -> None:
    text = UBUNTU.replace(
        "{{.device_1}}",
        "{{ (index .hardware.spec.interfaces 0).dhcp.mac }}/{{ .hardware.spec.disks }}",
    )
    assert (
        render(text).tasks[0].worker
        == "3c:ec:ef:4c:4f:54/[map[device:/dev/nvme0n1] map[device:/dev/sda]]"
    )


def test_rendered_size_is_capped() -> None:
    text = UBUNTU + "# " + "x" * MAX_RENDERED_BYTES + "\n"
    with pytest.raises(TemplateError, match="exceeds 256 KiB") as err:
        render(text)
    assert err.value.field == "template"


def test_parse_errors_come_before_data() -> None:
    with pytest.raises(TemplateError) as err:
        check_template(
            UBUNTU.replace("{{ index .Hardware.Disks 0 }}", "{{ indexx .Hardware.Disks 0 }}")
        )
    assert err.value.line == 16
    assert '"indexx"' in err.value.message


def test_yaml_errors_carry_line() -> None:
    with pytest.raises(TemplateError) as err:
        check_template('version: "0.1"\nname: x\ntasks:\n  - name: [oops\n')
    assert err.value.field == "template"
    assert err.value.line is not None and err.value.line >= 4


def test_check_accepts_list_functions_on_unknown_hardware() -> None:
    text = (
        'version: "0.1"\nname: t\ntasks:\n  - name: t\n    worker: "{{.device_1}}"\n'
        "    actions:\n      - name: a\n        image: wipe\n        environment:\n"
        '          DISK: "{{ .Hardware.Disks | first }}"\n'
        '          LAST: "{{ .Hardware.Disks | last }}"\n'
    )
    assert check_template(text).tasks[0].actions[0].name == "a"
    rendered = render_template(
        text, {"spec": {"disks": [{"device": "/dev/sda"}]}}, {"device_1": "m"}
    )
    assert rendered.tasks[0].actions[0].environment["DISK"] == "/dev/sda"


def test_yaml_that_nests_too_deeply_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="nesting deeper than 100 levels"):
        check_template("[" * 50_000 + "]" * 50_000)
