"""Manifests in the shapes operators write: metalflow's own kinds and Tinkerbell's.

`machine_yaml` and the template builders give whole documents in block style; `machine` and
`stream` build a Machine from its fields, for tests that vary what a machine says about itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence


def interface(
    mac: str, ip: str, *, gateway: str = "192.0.2.1", **fields: object
) -> dict[str, object]:
    """One interface with a /24 address, as a Machine's spec.interfaces lists it."""
    return {"mac": mac, "ip": ip, "netmask": "255.255.255.0", "gateway": gateway, **fields}


def machine(name: str, *interfaces: Mapping[str, object], **spec: object) -> dict[str, object]:
    """A Machine document; `spec` holds its other fields under their manifest names."""
    body: dict[str, object] = dict(spec)
    if interfaces:
        body["interfaces"] = list(interfaces)
    return {
        "apiVersion": "metalflow/v1",
        "kind": "Machine",
        "metadata": {"name": name},
        "spec": body,
    }


def stream(*documents: Mapping[str, object]) -> str:
    """The documents as one YAML stream: spec's fields one a line, every value written as JSON,
    which YAML reads as it is (a test can name the line a field is on)."""
    return "---\n".join(_document(document) for document in documents)


def _document(document: Mapping[str, object]) -> str:
    lines = []
    for key, value in document.items():
        if key == "spec" and isinstance(value, Mapping) and value:
            lines.append("spec:")
            lines.extend(f"  {field}: {json.dumps(item)}" for field, item in value.items())
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def machine_yaml(name: str, mac: str, ip: str | None = None, *, password: str = "calvin") -> str:
    ip_line = (
        f"\n      ip: {ip}\n      netmask: 255.255.255.0\n      gateway: 192.0.2.1" if ip else ""
    )
    return f"""\
apiVersion: metalflow/v1
kind: Machine
metadata:
  name: {name}
  labels: {{rack: r1}}
spec:
  arch: x86_64
  uefi: true
  hostname: {name}
  interfaces:
    - mac: "{mac}"{ip_line}
      nameservers: [192.0.2.53]
  disks:
    - device: /dev/vda
  bmc:
    driver: manual
    address: 192.0.2.200
    username: root
    password: {password}
  metadata:
    instance:
      hostname: {name}
"""


def template_yaml(
    name: str, actions: Sequence[Mapping[str, object]], *, global_timeout: int = 600
) -> str:
    lines = [
        "apiVersion: metalflow/v1",
        "kind: Template",
        "metadata:",
        f"  name: {name}",
        "spec:",
        "  data: |",
        '    version: "0.1"',
        f"    name: {name}",
        f"    global_timeout: {global_timeout}",
        "    tasks:",
        "      - name: os-installation",
        '        worker: "{{.device_1}}"',
        "        actions:",
    ]
    for action in actions:
        lines.append(f"          - name: {action['name']}")
        for key, value in action.items():
            if key != "name":
                lines.append(f"            {key}: {value}")
    return "\n".join(lines) + "\n"


def simple_template(name: str = "ubuntu", count: int = 3, **extra: object) -> str:
    return template_yaml(
        name,
        [
            {"name": f"step-{i}", "image": f"example/step-{i}:v1", "timeout": 60, **extra}
            for i in range(count)
        ],
    )


TINKERBELL_STACK = """\
apiVersion: "tinkerbell.org/v1alpha1"
kind: Hardware
metadata:
  name: sm01
  namespace: tink-system
spec:
  disks:
    - device: /dev/nvme0n1
  metadata:
    facility:
      facility_code: onprem
    instance:
      hostname: sm01
      id: "3c:ec:ef:4c:4f:54"
      operating_system:
        distro: ubuntu
        version: "22.04"
  interfaces:
    - dhcp:
        arch: x86_64
        hostname: sm01
        ip:
          address: 192.0.2.21
          gateway: 192.0.2.1
          netmask: 255.255.255.0
        lease_time: 86400
        mac: 3c:ec:ef:4c:4f:54
        name_servers:
          - 192.0.2.53
        uefi: true
      netboot:
        allowPXE: true
        allowWorkflow: true
---
apiVersion: "tinkerbell.org/v1alpha1"
kind: Template
metadata:
  name: ubuntu-jammy
  namespace: tink-system
spec:
  data: |
    version: "0.1"
    name: ubuntu-jammy
    global_timeout: 9800
    tasks:
      - name: "os installation"
        worker: "{{.device_1}}"
        volumes:
          - /dev:/dev
          - /dev/console:/dev/console
          - /lib/firmware:/lib/firmware:ro
        actions:
          - name: "stream image"
            image: quay.io/tinkerbell/actions/image2disk:latest
            timeout: 9600
            environment:
              DEST_DISK: {{ index .Hardware.Disks 0 }}
              IMG_URL: "http://192.0.2.1:8080/jammy.raw.gz"
              COMPRESSED: true
          - name: "write netplan"
            image: quay.io/tinkerbell/actions/writefile:latest
            timeout: 90
            environment:
              DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
              FS_TYPE: ext4
              DEST_PATH: /etc/netplan/config.yaml
              CONTENTS: |
                network:
                  version: 2
                  ethernets:
                    id0:
                      match:
                        macaddress: {{ (index .Hardware.Interfaces 0).DHCP.MAC }}
                      dhcp4: true
              UID: 0
              GID: 0
              MODE: 0644
              DIRMODE: 0755
          - name: "kexec"
            image: ghcr.io/jacobweinstock/waitdaemon:0.2.0
            timeout: 90
            pid: host
            environment:
              BLOCK_DEVICE: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
              FS_TYPE: ext4
              IMAGE: quay.io/tinkerbell/actions/kexec:latest
              WAIT_SECONDS: 10
            volumes:
              - /var/run/docker.sock:/var/run/docker.sock
---
apiVersion: "tinkerbell.org/v1alpha1"
kind: Workflow
metadata:
  name: sm01-jammy
  namespace: tink-system
spec:
  templateRef: ubuntu-jammy
  hardwareRef: sm01
  hardwareMap:
    device_1: 3c:ec:ef:4c:4f:54
"""
