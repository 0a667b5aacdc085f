"""ESP-AT 3.1+ over the AT port: the credential namespaces of ``mfg_nvs``, through ``AT+SYSMFG``.

A module whose ``AT+SYSFLASH?`` table lists ``mfg_nvs`` keeps its credentials as NVS items (``docs/esp-at-3x.md``), and
the firmware decides that by the table, not by its version: so does atflash.

Choices made here, and why:

- **One target per namespace** (``client_cert``, ...), placed at the
  ``mfg_nvs`` offset; its data is the namespace's values joined, compared
  item by item. The flow writes and verifies one namespace per round.
- **Reads are whole values.** A whole read's answer carries the value's
  length; the key listing does not, nor does a piece's answer, so reading
  in pieces would need a probe past the end whose answer the docs do not
  define. The wait allows the wire time of the longest value.
- **A write changes only what differs**: keys that must go (stale higher
  indices, a bare ``client_cert`` key, anything after a gap) are erased
  first, highest index first, so the numbered keys never have a gap and the
  module's NVS has room; then each item whose bytes differ is written with
  ``AT+SYSMFG=2,...,8,<len>``. Every other namespace (``factory_param``,
  ``ble_data``) is never touched.
- **Values over 8191 bytes are refused before anything is written**:
  ``AT+SYSMFG`` takes 1 to 8191 bytes per value, and cutting a value into
  several keys would change what the firmware reads. Such a value needs
  the whole partition rewritten, which ``--via esptool`` does.
- **Backups are one file per credential**, ``<ns>.<n>`` in the firmware's
  order, holding its raw PEM/DER bytes: ``atflash write --via at client_cert
  <those files>`` puts them back. Keys the firmware never reads are not
  saved; a namespace with no credential is saved as ``<ns>.empty``, a PKI
  bin of no items, which written back empties it again.
- **Reading a namespace** (``read --via at client_cert``) gives its
  credentials as a PKI bin (items in firmware order, IDs 0..n-1): it shows
  like a 2.x partition, and written back as a ready bin it restores them.

Values (key material) never enter events, errors or reprs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from atflash.backends.at.client import AtClient
from atflash.backends.at.protocol import (
    MFG_TYPE_NAMES,
    MFG_VALUE_MAX,
    MFG_VALUE_MIN,
    MfgType,
    SysmfgOp,
)
from atflash.backends.at.reply import (
    MFG_PREFIX,
    mfg_read_prefix,
    parse_mfg_keys,
    parse_mfg_namespaces,
    quote,
)
from atflash.backends.base import Target
from atflash.content import mfgnvs, pki
from atflash.content.nvs import NvsItem, NvsType
from atflash.errors import AtError, FirmwareError
from atflash.events import Event, EventSink
from atflash.layout.model import MFG_NVS, Partition, pki_kind_for
from atflash.planning.plan import PartitionImage, WritePlan

Progress = Callable[[int, int], None]
_T = TypeVar("_T")


class Sysmfg:
    """The ``AT+SYSMFG`` commands, over one open :class:`AtClient`."""

    def __init__(self, client: AtClient) -> None:
        self.client = client

    def namespaces(self) -> tuple[str, ...]:
        """The namespaces ``mfg_nvs`` holds."""
        reply = self.client.command("AT+SYSMFG?", expect=MFG_PREFIX)
        return self._parsed("AT+SYSMFG?", lambda: parse_mfg_namespaces(reply.lines))

    def keys(self, namespace: str) -> tuple[tuple[str, int], ...]:
        """``(key, type code)`` of every item of ``namespace``, in stored order."""
        cmd = f"AT+SYSMFG={SysmfgOp.READ:d},{quote(namespace)}"
        reply = self.client.command(cmd, expect=MFG_PREFIX)
        return self._parsed(cmd, lambda: parse_mfg_keys(reply.lines, namespace))

    def read(self, namespace: str, key: str, type_code: int) -> bytes:
        """The whole value of a string or binary item."""
        cmd = f"AT+SYSMFG={SysmfgOp.READ:d},{quote(namespace)},{quote(key)}"
        client = self.client
        wait = client.options.timeout + client.wire_time(MFG_VALUE_MAX)  # the longest value
        reply = client.command(
            cmd, read_reply=mfg_read_prefix(namespace, key, type_code), timeout=wait
        )
        if reply.lines:  # not "<prefix><len>,<bytes>": another type than listed, or junk
            raise AtError(client.port, cmd, "the answer holds no value of the type listed")
        return reply.data  # no value at all reads as empty: it differs, and is rewritten

    def write(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` as a binary item: ``OK``, then ``>``, the bytes, then ``OK``."""
        cmd = (
            f"AT+SYSMFG={SysmfgOp.WRITE:d},{quote(namespace)},{quote(key)},"
            f"{MfgType.BINARY:d},{len(value)}"
        )
        self.client.command(cmd, payload=value, ok_before_prompt=True)

    def erase(self, namespace: str, key: str) -> None:
        self.client.command(f"AT+SYSMFG={SysmfgOp.ERASE:d},{quote(namespace)},{quote(key)}")

    def _parsed(self, cmd: str, parse: Callable[[], _T]) -> _T:
        try:
            return parse()
        except AtError as exc:
            raise AtError(self.client.port, cmd, exc.problem) from None


@dataclass(frozen=True)
class Namespace:
    """What one credential namespace holds on the module: its keys and their type codes as
    listed, and the values of the items the firmware reads (those are all that is read)."""

    name: str
    keys: tuple[tuple[str, int], ...] = ()
    values: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def items(self) -> list[NvsItem]:
        """As NVS items for :mod:`atflash.content.mfgnvs` (a value not read stands in empty)."""
        return [NvsItem(self.name, key, *self._typed(key, code)) for key, code in self.keys]

    def _typed(self, key: str, code: int) -> tuple[NvsType, bytes | int]:
        if code == MfgType.BINARY:
            return "binary", self.values.get(key, b"")
        return _nvs_type(code), 0

    def reachable_keys(self) -> list[str]:
        """The keys the firmware reads, in its order: always its first keys, without a gap."""
        return mfgnvs.credential_keys(self.name, len(self.keys) - len(self.unreachable()))

    def credentials(self) -> list[bytes]:
        return mfgnvs.credentials(self.items(), self.name)

    def unreachable(self) -> list[str]:
        return mfgnvs.unreachable_keys(self.items(), self.name)

    def holds(self, values: Sequence[bytes]) -> bool:
        """Exactly ``values`` for the firmware to read, and no key it would not read."""
        return self.credentials() == list(values) and not self.unreachable()


def _nvs_type(code: int) -> NvsType:
    try:
        return MFG_TYPE_NAMES[MfgType(code)]
    except ValueError:
        return "u64"  # a code AT+SYSMFG does not define: no binary item, none the firmware reads


class MfgTargets:
    """The ``mfg_nvs`` side of an AT session: namespaces placed, compared, written, read."""

    def __init__(self, client: AtClient, progress: Callable[[str, str], Progress]) -> None:
        self.cmds = Sysmfg(client)
        self.port = client.port
        self._progress = progress
        self._present: tuple[str, ...] | None = None
        self._seen: dict[str, Namespace] = {}  # what a namespace held before this session wrote it

    # -- placing -----------------------------------------------------------------------

    def place(self, plan: WritePlan, store: Partition, events: EventSink) -> list[Target]:
        """One target per namespace at ``store`` (mfg_nvs); refuses what AT+SYSMFG cannot write."""
        images = [self._checked(image) for image in plan.images]
        expected = next((p for p in plan.profile.partitions if p.name == MFG_NVS), None)
        if expected is not None and (expected.offset, expected.size) != (store.offset, store.size):
            message = (
                f"device has {MFG_NVS} at {store.offset:#x} size {store.size:#x}, profile "
                f"{plan.profile.name} at {expected.offset:#x} size {expected.size:#x}"
            )
            events(Event("warning", self.port, message, partition=MFG_NVS))
        targets = []
        for image, values in images:
            data = b"".join(values)
            name = image.partition.name
            targets.append(Target(name, store.offset, data, payload=len(data), image=image))
        return targets

    def _checked(self, image: PartitionImage) -> tuple[PartitionImage, tuple[bytes, ...]]:
        name = image.partition.name
        if image.values is None:
            raise FirmwareError(
                self.port,
                f"{name}: a PKI partition image cannot go into {MFG_NVS}",
                hint="plan with the module's ESP-AT 3.1+ layout; nothing was written",
            )
        mfgnvs.credential_keys(name, len(image.values))  # a namespace that holds one, given two
        for n, value in enumerate(image.values):
            if not MFG_VALUE_MIN <= len(value) <= MFG_VALUE_MAX:
                source = image.items[n][0] if n < len(image.items) else f"item {n}"
                raise FirmwareError(
                    self.port,
                    f"{name}: {source} is {len(value)} bytes, but AT+SYSMFG writes values of "
                    f"{MFG_VALUE_MIN} to {MFG_VALUE_MAX} bytes",
                    hint="write it over the ROM loader (--via esptool), which rewrites mfg_nvs "
                    "whole; nothing was written",
                )
        return image, image.values

    # -- the module's items --------------------------------------------------------------

    def namespace(self, name: str, *, fresh: bool = False) -> Namespace:
        """What ``name`` holds: its keys and its reachable values (cached unless ``fresh``)."""
        if not fresh and name in self._seen:
            return self._seen[name]
        if fresh or self._present is None:
            self._present = self.cmds.namespaces()
        found = self._read(name, self._present)
        if not fresh:
            self._seen[name] = found
        return found

    def _read(self, name: str, present: Collection[str]) -> Namespace:
        if name not in present:
            return Namespace(name)
        listed = Namespace(name, self.cmds.keys(name))
        types = dict(listed.keys)
        reachable = listed.reachable_keys()
        total = len(reachable)
        report = self._progress(name, "read")
        values = {}
        for n, key in enumerate(reachable):
            values[key] = self.cmds.read(name, key, types[key])
            report(n + 1, total)
        return Namespace(name, listed.keys, values)

    def holds(self, target: Target) -> bool:
        return self.namespace(target.name).holds(_values(target))

    def matches(self, target: Target) -> bool:
        return self.namespace(target.name, fresh=True).holds(_values(target))

    def read(self, target: Target) -> bytes:
        return b"".join(self.namespace(target.name).credentials())

    def backup_files(self, target: Target) -> list[tuple[str, bytes]]:
        """``<ns>.<n>``: each credential the firmware reads now, in its order.

        A namespace with none gets ``<ns>.empty``, a PKI bin of no items:
        written back, it leaves the namespace with none again (as a blank
        partition's backup does on ESP-AT 2.x).
        """
        found = self.namespace(target.name)
        values = found.credentials()
        if not values:
            return [(f"{found.name}.empty", pki.build([]))]
        return [(f"{found.name}.{n}", value) for n, value in enumerate(values)]

    def namespace_bin(self, name: str, store: Partition) -> tuple[Partition, bytes]:
        """A namespace's credentials as a PKI bin, and a partition entry naming where they are."""
        kind = pki_kind_for(name)
        if kind is None or name not in mfgnvs.CREDENTIAL_NAMESPACES:
            raise FirmwareError(
                self.port,
                f"{name} is neither a partition nor a credential namespace of this module",
                hint=f"ESP-AT 3.1+ keeps credentials in {MFG_NVS}: read client_cert, mqtt_ca, ...",
            )
        found = self.namespace(name, fresh=True)
        data = pki.build((kind, v, f"{name}.{n}") for n, v in enumerate(found.credentials()))
        return Partition(name, store.type, store.subtype, store.offset, len(data), kind), data

    # -- writing ----------------------------------------------------------------------------

    def write(self, target: Target) -> None:
        """Make the namespace hold exactly the target's values, changing only what differs."""
        name = target.name
        values = _values(target)
        before = self.namespace(name)
        self._seen.pop(name, None)  # from the first command on, what it holds is unknown
        keys = mfgnvs.credential_keys(name, len(values))
        wanted = set(keys)
        for key in sorted((k for k, _c in before.keys if k not in wanted), key=_erase_order):
            self.cmds.erase(name, key)
        pending = [
            (key, value)
            for key, value in zip(keys, values, strict=True)
            if before.values.get(key) != value
        ]
        total = sum(len(value) for _key, value in pending)
        report = self._progress(name, "write")
        done = 0
        for key, value in pending:
            self.cmds.write(name, key, value)
            done += len(value)
            report(done, total)


def _values(target: Target) -> tuple[bytes, ...]:
    assert target.image is not None and target.image.values is not None  # placed by place()
    return target.image.values


def _erase_order(key: str) -> tuple[int, int]:
    """Numbered keys from the highest index down (no gap meanwhile), then any other key."""
    index = key.rsplit(".", 1)[-1]
    return (0, -int(index)) if "." in key and index.isdigit() else (1, 0)
