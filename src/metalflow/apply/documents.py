"""Parse applied YAML into typed documents (pure): which kind, which name, which fields.

Accepted: metalflow's own kinds (`apiVersion: metalflow/v1`: Machine, Template, Workflow, Prefix,
and the cloud catalogue's Metro, Plan and OperatingSystem),
Tinkerbell's `tinkerbell.org/v1alpha1` Hardware, Template and Workflow as they are, a bare
Tinkerbell template file (a mapping with `tasks`), and rufio's BMC objects: the
`bmc.tinkerbell.org/v1alpha1` Machine a Hardware's `bmcRef` names and the `v1` Secret with its
login (power/rufio.py).

A Prefix is an IPAM pool or reservation: its identity is its CIDR (`spec.cidr`), as the IPAM
names it everywhere else; `metadata.name` is optional and only names the document in errors.

A Metro, Plan or OperatingSystem is named by `metadata.name` (the metro's code, the plan's or
OS's slug); its `spec` is the body of the API's create without that name, with the API's own
field names (`bgp_peers`, `class`, `specs`, `rule`, `provisionable_on`, `image_url` ...), so
what `metalflow plan show -o yaml` prints is what a document holds.

The stream is read by the bounded loader (metalflow.yamlload) and holds at most MAX_DOCUMENTS
documents; every object in it is named once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from metalflow import yamlload
from metalflow.cloud.catalogue_schemas import MetroCreate, OperatingSystemCreate, PlanCreate
from metalflow.errors import Invalid, validation_message
from metalflow.inventory.schemas import MAX_METADATA_JSON, BmcSpec, MachineSpec, json_sized
from metalflow.inventory.tinkerbell import hardware_to_machine_fields
from metalflow.ipam.allocator import IpamError, Network, parse_block
from metalflow.ipam.schemas import PrefixCreate
from metalflow.names import check_name
from metalflow.power import declared, rufio

METALFLOW_API = "metalflow/v1"
TINKERBELL_API = "tinkerbell.org/v1alpha1"
KNOWN = {
    METALFLOW_API: (
        "Machine",
        "Template",
        "Workflow",
        "Prefix",
        "Metro",
        "Plan",
        "OperatingSystem",
    ),
    TINKERBELL_API: ("Hardware", "Template", "Workflow"),
    rufio.RUFIO_API: ("Machine",),
    rufio.SECRET_API: ("Secret",),
}
TOP_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
MAX_DOCUMENTS = 50_000
"""Per apply: well above the 20,000 machines of a large site's inventory in one stream."""
MAX_HARDWARE_MAP_JSON = 16 * 1024
LIBYAML_BAD_ESCAPE = "found invalid Unicode character escape code"
BAD_ESCAPE_FIX = (
    "a \\uD800-\\uDFFF escape is half a character, not text; send bytes that are not text"
    " base64-encoded, e.g. as userDataBase64"
)
METADATA_KEYS = frozenset({"name", "namespace", "project", "labels"})
"""A Machine's fields that are written under `metadata` in the document."""


@dataclass(frozen=True)
class MachineDoc:
    index: int
    spec: MachineSpec
    source: str
    hardware_spec: dict[str, Any] | None = None
    bmc_ref: rufio.ObjectRef | None = None
    """A Hardware's `spec.bmcRef`: its BMC is that rufio Machine's, found when applied."""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class SecretDoc:
    index: int
    ref: rufio.ObjectRef
    login: rufio.Login

    @property
    def name(self) -> str:
        return self.ref.name


@dataclass(frozen=True)
class BmcMachineDoc:
    """A rufio Machine (`bmc.tinkerbell.org/v1alpha1`): a BMC, not a metalflow machine."""

    index: int
    machine: rufio.RufioMachine

    @property
    def name(self) -> str:
        return self.machine.ref.name


@dataclass(frozen=True)
class TemplateDoc:
    index: int
    name: str
    data: str
    where: str


@dataclass(frozen=True)
class WorkflowDoc:
    index: int
    name: str
    template: str
    machine: str | None
    hardware_map: dict[str, str] = field(default_factory=dict)
    kind: str = "provision"
    boot: str | None = None
    reboot: bool = False


PREFIX_SPEC_KEYS = {
    "cidr": "cidr",
    "kind": "kind",
    "metro": "metro",
    "project": "project",
    "tags": "tags",
    "description": "description",
    "provisioning": "provisioning",
    "byo": "byo",
    "allowedProjects": "allowed_projects",
}
"""A Prefix's `spec` keys (camelCase, as Kubernetes-style documents write them) and the field
of the IPAM's own request each one is."""


@dataclass(frozen=True)
class PrefixDoc:
    """An IPAM pool, or a project's reservation (`byo`)."""

    index: int
    network: Network
    spec: PrefixCreate
    label: str | None = None
    """`metadata.name`, if the document has one: not stored, the CIDR is the prefix's name."""

    @property
    def name(self) -> str:
        return str(self.network)


@dataclass(frozen=True)
class MetroDoc:
    index: int
    spec: MetroCreate

    @property
    def name(self) -> str:
        return self.spec.code


@dataclass(frozen=True)
class PlanDoc:
    index: int
    spec: PlanCreate

    @property
    def name(self) -> str:
        return self.spec.slug


@dataclass(frozen=True)
class OperatingSystemDoc:
    index: int
    spec: OperatingSystemCreate

    @property
    def name(self) -> str:
        return self.spec.slug


CatalogueDoc = MetroDoc | PlanDoc | OperatingSystemDoc
CATALOGUE: dict[str, tuple[Callable[[int, dict[str, Any]], CatalogueDoc], str]] = {
    "Metro": (lambda index, body: MetroDoc(index, MetroCreate.model_validate(body)), "code"),
    "Plan": (lambda index, body: PlanDoc(index, PlanCreate.model_validate(body)), "slug"),
    "OperatingSystem": (
        lambda index, body: OperatingSystemDoc(index, OperatingSystemCreate.model_validate(body)),
        "slug",
    ),
}
"""Each catalogue kind: its document built from the API's create body, and the body's field
that metadata.name fills."""

Document = (
    SecretDoc
    | BmcMachineDoc
    | MachineDoc
    | TemplateDoc
    | WorkflowDoc
    | PrefixDoc
    | MetroDoc
    | PlanDoc
    | OperatingSystemDoc
)
APPLY_ORDER = {
    MetroDoc: 0,
    PlanDoc: 1,
    PrefixDoc: 2,
    SecretDoc: 3,
    BmcMachineDoc: 4,
    MachineDoc: 5,
    TemplateDoc: 6,
    OperatingSystemDoc: 7,
    WorkflowDoc: 8,
}
"""Whatever a document may name comes before it: a Hardware's bmcRef finds its rufio Machine,
which finds its Secret, already applied in the same transaction; a machine's booting interface
takes its address from a provisioning Prefix of the same stream; an operating system's
provisionable_on names plans and its template a Template, applied before it."""


def _apply_key(doc: Document) -> tuple[int, int, int]:
    """Prefixes largest first within their family: each pool exists before the blocks it holds,
    which are then carved from its free space, whatever their order in the file."""
    if isinstance(doc, PrefixDoc):
        return APPLY_ORDER[PrefixDoc], doc.network.version, doc.network.prefixlen
    return APPLY_ORDER[type(doc)], 0, 0


def parse(text: str) -> list[Document]:
    """All documents of a YAML stream in the order they apply: Metros, Plans, Prefixes, Secrets,
    rufio Machines, machines, templates, operating systems, workflows."""
    docs: list[Document] = []
    try:
        for index, raw in enumerate(yamlload.load_all(text)):
            if index >= MAX_DOCUMENTS:
                raise Invalid(
                    f"the stream has more than {MAX_DOCUMENTS:,} documents, the limit per apply;"
                    " split it into several applies",
                    field="yaml",
                )
            if raw is not None:
                docs.append(_one(index, raw))
    except yaml.YAMLError as exc:
        line = yamlload.error_line(exc, text)
        where = f"line {line}: " if line is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if problem == LIBYAML_BAD_ESCAPE:
            problem += f" ({BAD_ESCAPE_FIX})"
        raise Invalid(f"invalid YAML: {where}{problem}", field="yaml") from None
    if not docs:
        raise Invalid("no documents found; nothing to apply", field="yaml")
    check_unique(docs)
    return sorted(docs, key=_apply_key)


def identity(doc: Document) -> str:
    """What a document names, as one stream may name it once: a Hardware and a metalflow Machine
    of one name are one machine, a Template and a bare template file of one name one template."""
    if isinstance(doc, SecretDoc):
        return f"Secret {doc.ref}"
    if isinstance(doc, BmcMachineDoc):
        return f"Machine.bmc.tinkerbell.org {doc.machine.ref}"
    if isinstance(doc, MachineDoc):
        return f"Machine {doc.name}"
    if isinstance(doc, TemplateDoc):
        return f"Template {doc.name}"
    if isinstance(doc, PrefixDoc):
        return f"Prefix {doc.name}"
    if isinstance(doc, MetroDoc | PlanDoc | OperatingSystemDoc):
        return f"{type(doc).__name__.removesuffix('Doc')} {doc.name}"
    return f"Workflow {doc.name}"


def check_unique(docs: list[Document]) -> None:
    """Refuse a stream naming an object twice: applied in order, the later document would
    silently replace the earlier."""
    seen: dict[str, int] = {}
    for doc in docs:
        key = identity(doc)
        if key in seen:
            name_field = "spec.cidr" if isinstance(doc, PrefixDoc) else "metadata.name"
            where = f"documents[{doc.index}].{name_field}"
            raise Invalid(
                f"documents[{seen[key]}] and documents[{doc.index}] are both {key}; one stream"
                " may name each object once",
                field=where,
            )
        seen[key] = doc.index


def _one(index: int, raw: Any) -> Document:
    where = f"documents[{index}]"
    if not isinstance(raw, dict):
        raise Invalid(f"{where} must be a mapping, got {type(raw).__name__}", field=where)
    if "apiVersion" not in raw and "tasks" in raw:
        name = check_name(raw.get("name"), f"{where}.name")
        return TemplateDoc(index, name, yaml.safe_dump(raw, sort_keys=False), where)
    api, kind = raw.get("apiVersion"), raw.get("kind")
    if api not in KNOWN:
        raise Invalid(
            f"{where}.apiVersion {api!r} is not known; use {METALFLOW_API}, {TINKERBELL_API},"
            f" {rufio.RUFIO_API} (rufio Machine) or {rufio.SECRET_API} (Secret)",
            field=f"{where}.apiVersion",
        )
    if kind not in KNOWN[api]:
        raise Invalid(
            f"{where}.kind {kind!r} is not known for {api}; one of: {', '.join(KNOWN[api])}",
            field=f"{where}.kind",
        )
    unknown = sorted(set(raw) - (rufio.SECRET_KEYS if kind == "Secret" else TOP_KEYS))
    if unknown:
        raise Invalid(f"{where}: unknown field {unknown[0]!r}", field=f"{where}.{unknown[0]}")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise Invalid(f"{where}.metadata must be a mapping", field=f"{where}.metadata")
    if kind == "Prefix":
        return _prefix(index, metadata, raw.get("spec"), where)
    if kind in CATALOGUE:
        return _catalogue(index, kind, metadata, raw.get("spec"), where)
    name = check_name(metadata.get("name"), f"{where}.metadata.name")
    if kind == "Secret":
        ref = rufio.ObjectRef(rufio.namespace_of(metadata, where), name)
        return SecretDoc(index, ref, rufio.parse_secret(raw, where))
    spec = raw.get("spec") or {}
    if not isinstance(spec, dict):
        raise Invalid(f"{where}.spec must be a mapping", field=f"{where}.spec")
    if kind == "Template":
        return _template(index, name, spec, where)
    if kind == "Workflow":
        return _workflow(index, name, spec, where, tinkerbell=api == TINKERBELL_API)
    if api == rufio.RUFIO_API:
        ref = rufio.ObjectRef(rufio.namespace_of(metadata, where), name)
        return BmcMachineDoc(index, rufio.parse_machine(ref, spec, where))
    if kind == "Hardware":
        spec = _free_fields(spec, f"{where}.spec")
        fields = hardware_to_machine_fields(name, metadata.get("namespace"), spec)
        fields["labels"] = metadata.get("labels") or {}
        bmc_ref = rufio.parse_bmc_ref(spec, rufio.namespace_of(metadata, where), where)
        machine_spec = _machine_spec(fields, where, "Hardware")
        return MachineDoc(index, machine_spec, "Hardware", spec, bmc_ref)
    fields = {
        "name": name,
        "labels": metadata.get("labels") or {},
        **({"project": metadata["project"]} if "project" in metadata else {}),
        **spec,
    }
    machine = _machine_spec(fields, where, "Machine")
    if machine.bmc is not None:
        check_bmc(machine.bmc, f"{where}.spec.bmc")
    return MachineDoc(index, machine, "Machine")


def check_bmc(bmc: BmcSpec, where: str, origin: Mapping[str, str] | None = None) -> None:
    """The BMC's own driver checks its fields offline; `origin` maps a `spec.bmc` field to the
    path that wrote it (a rufio Machine's), else the path is `where` and the field."""
    try:
        declared.check(bmc)
    except declared.BmcFieldError as exc:
        if origin is not None:
            path = origin.get(exc.field, origin.get("", where))
        else:
            path = f"{where}.{exc.field}" if exc.field else where
        raise Invalid(f"{path}: {exc.message}", field=path) from None


def _free_fields(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """A Hardware spec is stored as written: each of its fields is capped like `spec.metadata`."""
    out = {}
    for key, value in spec.items():
        try:
            out[key] = json_sized(value, f"{where}.{key}", MAX_METADATA_JSON)
        except ValueError as exc:
            raise Invalid(str(exc), field=f"{where}.{key}") from None
    return out


def _machine_spec(fields: dict[str, Any], where: str, source: str) -> MachineSpec:
    """The source (Machine or Hardware) lets an error give the fix that kind allows."""
    try:
        return MachineSpec.model_validate(fields, context={"source": source})
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(part) for part in error["loc"])
        section = "metadata" if error["loc"] and error["loc"][0] in METADATA_KEYS else "spec"
        path = f"{where}.{section}.{loc}" if loc else f"{where}.spec"
        message = validation_message(error)
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        raise Invalid(f"{path}: {message}", field=path) from None


def _prefix(index: int, metadata: dict[str, Any], spec: Any, where: str) -> PrefixDoc:
    unknown = sorted(set(metadata) - {"name"})
    if unknown:
        path = f"{where}.metadata.{unknown[0]}"
        raise Invalid(f"{path}: unknown field (a Prefix's metadata has only a name)", field=path)
    label = (
        None
        if metadata.get("name") is None
        else check_name(metadata["name"], f"{where}.metadata.name")
    )
    if not isinstance(spec, dict):
        raise Invalid(f"{where}.spec must be a mapping with at least cidr", field=f"{where}.spec")
    unknown = sorted(set(spec) - set(PREFIX_SPEC_KEYS))
    if unknown:
        path = f"{where}.spec.{unknown[0]}"
        raise Invalid(
            f"{path}: unknown field; a Prefix's spec has {', '.join(PREFIX_SPEC_KEYS)}",
            field=path,
        )
    cidr = spec.get("cidr")
    if not isinstance(cidr, str):
        raise Invalid(
            f"{where}.spec.cidr is required: the prefix as address/prefixlen, such as"
            " 198.51.100.0/24",
            field=f"{where}.spec.cidr",
        )
    path = f"{where}.spec.cidr"
    try:
        network = parse_block(cidr, field=path)
    except IpamError as exc:
        message = exc.message if exc.message.startswith(path) else f"{path}: {exc.message}"
        raise Invalid(message, field=path) from None
    fields = {PREFIX_SPEC_KEYS[key]: value for key, value in spec.items()}
    try:
        request = PrefixCreate.model_validate({**fields, "cidr": str(network)})
    except ValidationError as exc:
        error = exc.errors()[0]
        spelled = {field: key for key, field in PREFIX_SPEC_KEYS.items()}
        parts = [str(part) for part in error["loc"]]
        if parts:
            parts[0] = spelled.get(parts[0], parts[0])
        path = ".".join([f"{where}.spec", *parts])
        raise Invalid(f"{path}: {validation_message(error)}", field=path) from None
    return PrefixDoc(index, network, request, label)


def _catalogue(
    index: int, kind: str, metadata: dict[str, Any], spec: Any, where: str
) -> CatalogueDoc:
    """A Metro, Plan or OperatingSystem: the API's create body, named by metadata.name."""
    build, name_field = CATALOGUE[kind]
    unknown = sorted(set(metadata) - {"name"})
    if unknown:
        path = f"{where}.metadata.{unknown[0]}"
        raise Invalid(f"{path}: unknown field (a {kind}'s metadata has only a name)", field=path)
    name = check_name(metadata.get("name"), f"{where}.metadata.name")
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise Invalid(f"{where}.spec must be a mapping", field=f"{where}.spec")
    if name_field in spec:
        path = f"{where}.spec.{name_field}"
        raise Invalid(f"{path}: unknown field; a {kind} is named by metadata.name", field=path)
    try:
        return build(index, {**spec, name_field: name})
    except ValidationError as exc:
        error = exc.errors()[0]
        parts = [str(part) for part in error["loc"]]
        if parts == [name_field]:
            path = f"{where}.metadata.name"
        else:
            path = ".".join([f"{where}.spec", *parts])
        message = "unknown field" if error["type"] == "extra_forbidden" else None
        raise Invalid(f"{path}: {message or validation_message(error)}", field=path) from None


def _template(index: int, name: str, spec: dict[str, Any], where: str) -> TemplateDoc:
    unknown = sorted(set(spec) - {"data"})
    if unknown:
        raise Invalid(f"{where}.spec: unknown field {unknown[0]!r}", field=f"{where}.spec")
    data = spec.get("data")
    if not isinstance(data, str) or not data.strip():
        raise Invalid(f"{where}.spec.data must hold the template text", field=f"{where}.spec.data")
    return TemplateDoc(index, name, data, f"{where}.spec.data")


def _workflow(
    index: int, name: str, spec: dict[str, Any], where: str, *, tinkerbell: bool
) -> WorkflowDoc:
    if tinkerbell:
        allowed = {"templateRef", "hardwareRef", "hardwareMap", "bootOptions"}
        template_key, machine_key = "templateRef", "hardwareRef"
    else:
        allowed = {"template", "machine", "hardwareMap", "kind", "boot", "reboot"}
        template_key, machine_key = "template", "machine"
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise Invalid(f"{where}.spec: unknown field {unknown[0]!r}", field=f"{where}.spec")
    template = spec.get(template_key)
    if not isinstance(template, str) or not template:
        raise Invalid(f"{where}.spec.{template_key} is required", field=f"{where}.spec")
    hardware_map = _hardware_map(spec.get("hardwareMap"), f"{where}.spec.hardwareMap")
    machine = spec.get(machine_key)
    if machine is None and not hardware_map:
        raise Invalid(
            f"{where}.spec needs {machine_key} or a hardwareMap naming the machine's MAC",
            field=f"{where}.spec.{machine_key}",
        )
    boot, reboot = _boot_options(spec, where, tinkerbell=tinkerbell)
    return WorkflowDoc(
        index,
        name,
        template,
        machine,
        hardware_map,
        spec.get("kind", "provision"),
        boot,
        reboot,
    )


def _hardware_map(value: Any, where: str) -> dict[str, str]:
    """Tinkerbell's `map[string]string`: a value that is a mapping or list is refused rather than
    stored as its Python text."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be a mapping", field=where)
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool):
            raise Invalid(f"{where}.{key} must be a string such as a MAC address", field=where)
    try:
        json_sized(value, where, MAX_HARDWARE_MAP_JSON)
    except ValueError as exc:
        raise Invalid(str(exc), field=where) from None
    return {str(k): str(v) for k, v in value.items()}


def _boot_options(spec: dict[str, Any], where: str, *, tinkerbell: bool) -> tuple[str | None, bool]:
    """metalflow's `boot: netboot` + `reboot`, or Tinkerbell's `bootOptions.bootMode: netboot`
    (its `toggleAllowNetboot` is what metalflow always does)."""
    if not tinkerbell:
        boot, reboot = spec.get("boot"), spec.get("reboot", False)
        if boot not in (None, "netboot"):
            raise Invalid(
                f"{where}.spec.boot must be netboot (the BMC powers the machine into PXE) or"
                " left out",
                field=f"{where}.spec.boot",
            )
        if not isinstance(reboot, bool):
            raise Invalid(
                f"{where}.spec.reboot must be true or false", field=f"{where}.spec.reboot"
            )
        return boot, reboot
    options = spec.get("bootOptions") or {}
    if not isinstance(options, dict):
        raise Invalid(f"{where}.spec.bootOptions must be a mapping", field=f"{where}.spec")
    mode = options.get("bootMode")
    if mode in (None, ""):
        return None, False
    if mode != "netboot":
        raise Invalid(
            f"{where}.spec.bootOptions.bootMode {mode!r} is not supported; use netboot",
            field=f"{where}.spec.bootOptions.bootMode",
        )
    return "netboot", False
