"""The issuer's settings: an ``--issue FILE`` (TOML) or the ``[issue]`` table of a bench file.

Only reads and checks the settings; the CA itself is opened by
:mod:`atflash.issue.ca`. Keys, spelled as scripts rely on them::

    ca_cert = "ca.crt"            # the CA certificate; its chain after it, or chain = [...]
    ca_key = "ca.key"             # a PEM file, or "pkcs11:token=line;object=ca"
    pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
    pin_env = "ATFLASH_PKCS11_PIN"  # the PIN (or an encrypted ca_key's passphrase); or pin_file
    subject = "CN={mac}"          # RDNs separated by ',': {mac} {mac_hex} {chip} {station} {set}
    san = ["DNS:{mac_hex}.devices.example.com"]
    key_type = "ec-p256"          # or ec-p384, rsa-2048, rsa-3072
    validity_days = 3650
    backdate_hours = 24           # notBefore this far back: a module's clock may be unset
    extended_key_usage = ["clientAuth"]
    key_usage = ["digitalSignature"]   # default: + keyEncipherment for RSA
    fills = ["client"]            # credential kinds: client_cert/_key/_ca, mqtt_*, ...
    write_ca = true               # the CA and its chain into <kind>_ca too
    set = "lot-42"                # what {set} stands for
    ledger = "issued.sqlite"      # default: <issuer>.ledger.sqlite beside the file

Relative paths are relative to the file that names them.
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atflash.errors import FileInputError, InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_ISSUER_FILE = 64 * 1024
# RFC 5280's upper bounds (ub-common-name and friends) are 64 characters.
MAX_RDN_CHARS = 64
TEMPLATE_FIELDS = ("mac", "mac_hex", "chip", "station", "set")
# The leaf key types ESP-AT's mbedTLS takes that a station makes; name -> (kind, size or curve).
KEY_TYPES = {
    "ec-p256": ("ec", "secp256r1"),
    "ec-p384": ("ec", "secp384r1"),
    "rsa-2048": ("rsa", 2048),
    "rsa-3072": ("rsa", 3072),
}
# Subject attributes a template may name (their usual short names).
SUBJECT_ATTRIBUTES = ("CN", "O", "OU", "C", "ST", "L", "serialNumber", "emailAddress", "DC")
SAN_KINDS = ("DNS", "URI", "email", "IP")
KEY_USAGES = (
    "digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
    "keyAgreement",
)  # fmt: skip
EXTENDED_KEY_USAGES = ("clientAuth", "serverAuth", "codeSigning", "emailProtection")
KINDS = ("client", "server", "mqtt", "wpa2")
DEFAULT_VALIDITY_DAYS = 3650
DEFAULT_BACKDATE_HOURS = 24

_KEYS = (
    "ca_cert", "chain", "ca_key", "pkcs11_module", "pin_env", "pin_file", "subject", "san",
    "key_type", "validity_days", "backdate_hours", "extended_key_usage", "key_usage",
    "fills", "write_ca", "set", "ledger",
)  # fmt: skip


class IssuerError(InputError):
    """The issuer's settings, its CA certificate or its CA key are not usable."""

    def __init__(self, source: str, problem: str, *, hint: str | None = None) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}", hint=hint)


@dataclass(frozen=True)
class IssuerConfig:
    """An issuer's checked settings (files not yet opened)."""

    source: str  # the issuer file, or "bench.toml [issue]"
    ca_cert: Path
    ca_key: str  # a file path (absolute) or a pkcs11: URI
    chain: tuple[Path, ...] = ()
    pkcs11_module: str | None = None
    pin_env: str | None = None
    pin_file: Path | None = None
    subject: str = "CN={mac}"
    san: tuple[str, ...] = ()
    key_type: str = "ec-p256"
    validity_days: int = DEFAULT_VALIDITY_DAYS
    backdate_hours: int = DEFAULT_BACKDATE_HOURS
    extended_key_usage: tuple[str, ...] = ("clientAuth",)
    key_usage: tuple[str, ...] | None = None  # None: by key type
    fills: tuple[str, ...] = ("client",)
    write_ca: bool = True
    set_name: str | None = None
    ledger: str | None = None  # None: beside the issuer file
    default_ledger: str = "issuer.ledger.sqlite"

    @property
    def hsm(self) -> bool:
        return self.ca_key.startswith("pkcs11:")

    @property
    def usages(self) -> tuple[str, ...]:
        if self.key_usage is not None:
            return self.key_usage
        if KEY_TYPES[self.key_type][0] == "rsa":
            return ("digitalSignature", "keyEncipherment")
        return ("digitalSignature",)

    @property
    def ledger_url(self) -> str:
        return self.ledger or self.default_ledger


def load_issuer_config(path: str | Path) -> IssuerConfig:
    """Read and check an issuer file (``--issue FILE``)."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_ISSUER_FILE + 1)
    except OSError as exc:
        raise FileInputError(path, f"cannot read the issuer file ({exc.strerror})") from None
    if len(raw) > MAX_ISSUER_FILE:
        raise IssuerError(source, "larger than 64 KiB: not an issuer file")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise IssuerError(source, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise IssuerError(source, f"not valid TOML: {exc}") from None
    if set(data) == {"issue"} and isinstance(data["issue"], dict):
        data = data["issue"]  # a bench file's [issue] table given as the issuer file
    return parse_issuer_config(data, source=source, base=path.parent, stem=path)


def bench_issuer_config(table: Mapping[str, Any], bench: str | Path) -> IssuerConfig:
    """A bench file's ``[issue]`` table: paths in it are taken from the bench file's folder."""
    bench = Path(bench)
    return parse_issuer_config(table, source=f"{bench} [issue]", base=bench.parent, stem=bench)


def parse_issuer_config(
    data: Mapping[str, Any], *, source: str, base: Path, stem: Path | None = None
) -> IssuerConfig:
    """Turn an issuer's TOML table into an :class:`IssuerConfig`; every problem is one line."""
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise IssuerError(
            source, f"unknown key {unknown[0]!r}", hint=f"known keys: {', '.join(_KEYS)}"
        )
    get = _Getter(data, source)
    ca_cert = get.text("ca_cert", required=True)
    ca_key = get.text("ca_key", required=True)
    assert ca_cert is not None and ca_key is not None
    key = ca_key if ca_key.startswith("pkcs11:") else str(base / ca_key)
    module = get.text("pkcs11_module")
    if ca_key.startswith("pkcs11:") and module is None:
        raise IssuerError(
            source, "ca_key is a pkcs11: URI but pkcs11_module is not set",
            hint="name the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so",
        )  # fmt: skip
    pin_env, pin_file = get.text("pin_env"), get.text("pin_file")
    if pin_env and pin_file:
        raise IssuerError(source, "give pin_env or pin_file, not both")
    key_type = get.text("key_type") or "ec-p256"
    if key_type not in KEY_TYPES:
        # mbedTLS in ESP-AT has no EdDSA, X25519/X448 or DSA keys for TLS (see content.keys).
        unusable = key_type.lower().startswith(("ed", "x25519", "x448", "dsa"))
        what = "a key type the firmware can use" if unusable else "a key type atflash issues"
        raise IssuerError(
            source,
            f"key_type {key_type!r} is not {what}",
            hint=f"use one of {', '.join(KEY_TYPES)}",
        )
    subject = get.text("subject") or "CN={mac}"
    san = get.texts("san") or ()
    set_name = get.text("set")
    for template in (subject, *san):
        check_template(template, source, set_name=set_name)
    parse_subject(subject, source)  # the attribute names, before any board
    for entry in san:
        _san_kind(entry, source)
    usages = get.texts("key_usage")
    ekus = get.texts("extended_key_usage")
    for value, allowed, key_name in (
        (usages, KEY_USAGES, "key_usage"),
        (ekus, EXTENDED_KEY_USAGES, "extended_key_usage"),
    ):
        for name in value or ():
            if name not in allowed:
                raise IssuerError(
                    source, f"{key_name}: unknown {name!r}", hint=f"use: {', '.join(allowed)}"
                )
    fills = get.texts("fills") or ("client",)
    for kind in fills:
        if kind not in KINDS:
            raise IssuerError(
                source, f"fills: unknown credential kind {kind!r}", hint=f"use: {', '.join(KINDS)}"
            )
    ledger = get.text("ledger")
    if ledger is not None and "://" not in ledger:
        ledger = str(base / ledger)
    default_ledger = str((stem or base / "issuer").with_suffix(".ledger.sqlite"))
    return IssuerConfig(
        source=source,
        ca_cert=base / ca_cert,
        ca_key=key,
        chain=tuple(base / p for p in get.texts("chain") or ()),
        pkcs11_module=module,
        pin_env=pin_env,
        pin_file=base / pin_file if pin_file else None,
        subject=subject,
        san=san,
        key_type=key_type,
        validity_days=get.number("validity_days", DEFAULT_VALIDITY_DAYS, 1, 100 * 366),
        backdate_hours=get.number("backdate_hours", DEFAULT_BACKDATE_HOURS, 0, 24 * 366),
        extended_key_usage=ekus if ekus is not None else ("clientAuth",),
        key_usage=usages,
        fills=fills,
        write_ca=get.flag("write_ca", True),
        set_name=set_name,
        ledger=ledger,
        default_ledger=default_ledger,
    )


class _Getter:
    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data, self.source = data, source

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise IssuerError(self.source, f"{key} is not set", hint=f'add {key} = "..."')
            return None
        if not isinstance(value, str) or not value.strip():
            raise IssuerError(self.source, f"{key} must be a non-empty string, not {value!r}")
        return value.strip()

    def texts(self, key: str) -> tuple[str, ...] | None:
        value = self.data.get(key)
        if value is None:
            return None
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise IssuerError(self.source, f"{key} must be a string or a list of strings")
        return tuple(values)

    def number(self, key: str, default: int, low: int, high: int) -> int:
        value = self.data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise IssuerError(self.source, f"{key} must be a whole number in {low}..{high}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise IssuerError(self.source, f"{key} must be true or false")
        return value


def check_template(template: str, source: str, *, set_name: str | None) -> None:
    """Refuse a template naming an unknown field (or ``{set}`` with no ``set`` given)."""
    try:
        fields = [
            name
            for _text, name, _spec, _conv in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise IssuerError(source, f"template {template!r}: {exc}") from None
    for name in fields:
        if name not in TEMPLATE_FIELDS:
            raise IssuerError(
                source,
                f"template {template!r} names unknown field {{{name}}}",
                hint=f"fields: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}",
            )
        if name == "set" and set_name is None:
            raise IssuerError(source, f"template {template!r} uses {{set}} but set is not given")


_RDN = re.compile(r"^\s*([A-Za-z]+)\s*=(.*)$")


def parse_subject(template: str, source: str) -> list[tuple[str, str]]:
    """``CN={mac},O=Acme`` -> ``[("CN", "{mac}"), ("O", "Acme")]``; attribute names checked."""
    rdns = []
    for part in template.split(","):
        match = _RDN.match(part)
        if match is None:
            raise IssuerError(
                source, f"subject {template!r}: {part!r} is not ATTR=value",
                hint="e.g. subject = \"CN={mac},O=Example\" (no ',' inside a value)",
            )  # fmt: skip
        name = match.group(1)
        known = {a.lower(): a for a in SUBJECT_ATTRIBUTES}
        if name.lower() not in known:
            raise IssuerError(
                source, f"subject: unknown attribute {name!r}",
                hint=f"use: {', '.join(SUBJECT_ATTRIBUTES)}",
            )  # fmt: skip
        rdns.append((known[name.lower()], match.group(2).strip()))
    return rdns


def _san_kind(entry: str, source: str) -> tuple[str, str]:
    kind, sep, value = entry.partition(":")
    if not sep or kind not in SAN_KINDS or not value:
        raise IssuerError(
            source,
            f"san {entry!r} is not KIND:value",
            hint=f"KIND is one of {', '.join(SAN_KINDS)}",
        )
    return kind, value


san_kind = _san_kind
