"""``AT+SYSMFG`` of ESP-AT 3.1+, over an NVS image kept in the ``mfg_nvs`` partition.

The store is the flash itself: every command reads the partition with
:func:`~atflash.content.nvs.parse_nvs` and every change writes a whole new
image with :func:`~atflash.content.nvs.build_nvs` in its place, so
``AT+SYSFLASH`` reads and writes of ``mfg_nvs`` and ``AT+SYSMFG`` see the
same bytes, and atflash's esptool-path reader can check what was written.

As documented (esp-at docs, ``docs/esp-at-3x.md``): ``AT+SYSMFG?`` and
``AT+SYSMFG=1`` list ``+SYSMFG:"<ns>"``; ``=1,"ns"`` lists
``+SYSMFG:"ns","key",<type>``; ``=1,"ns","key"[,offset,length]`` answers
``+SYSMFG:"ns","key",<type>,<len>,<value>``; ``=0,"ns"[,"key"]`` erases;
``=2,"ns","key",<type>,<value>`` writes, types 1..8 (u8, i8, u16, i16, u32,
i32, string, binary); for 7 and 8 ``<value>`` is a length of 1 to 8191, the
module answers ``OK`` then ``>``, takes exactly that many bytes with no
timeout, and answers ``OK`` or ``ERROR``. Namespace and key hold 1 to 15
characters. Every form answers ``ERROR`` unless the table lists ``mfg_nvs``.

Where the doc is silent, the most literal reading of it:

- a value read ends with a line break before the final ``OK`` (the doc
  shows a blank line there, unlike ``AT+SYSFLASH``'s read);
- a numeric value is printed in decimal and ``<len>`` is the size of its
  type in bytes (1, 2 or 4), not the length of the text: read it to the
  line end. ``offset,length`` on a numeric value is ``ERROR``; on a string
  or binary, the range must lie inside the value;
- listing or reading a namespace or key that is not there is ``ERROR``, as
  is erasing a missing key; erasing a whole namespace that is not there is
  ``OK`` (NVS erases nothing). A namespace whose last key is erased is no
  longer listed: the image is rebuilt from its items;
- a write replaces the key whatever type it had; 64-bit items (no AT type
  code) are neither listed nor readable;
- a string is stored as an NVS string, a C string: it ends at its first
  NUL, and one longer than NVS holds (3999 bytes) is taken and then answered
  ``ERROR``, as ``nvs_set_str`` fails; so is any write that does not fit the
  partition;
- an image that does not parse answers ``ERROR`` to everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from atflash.backends.at.protocol import (
    MFG_INT_RANGES,
    MFG_NAME_MAX,
    MFG_NVS_LABEL,
    MFG_TYPE_NAMES,
    MFG_VALUE_MAX,
    MFG_VALUE_MIN,
    WRITE_PROMPT,
    MfgType,
    SysmfgOp,
)
from atflash.content.mfgnvs import ModuleDefaults, ble_data_items, factory_param_items
from atflash.content.nvs import NvsItem, build_nvs, encode_text, parse_nvs
from atflash.errors import AtflashError
from atflash.layout.model import Partition, Profile
from atflash.sim.at_base import FAILED, OK, Answer, DataPhase, Param, Reply, split_params
from atflash.sim.at_module import module_facts

_TYPE_CODES = {name: code for code, name in MFG_TYPE_NAMES.items()}
_SIZES = {"u8": 1, "i8": 1, "u16": 2, "i16": 2, "u32": 4, "i32": 4}
_UART_PORT = 1  # every UART module of factory_param_data.csv talks on UART1


def factory_items(profile: Profile) -> list[NvsItem]:
    """What a new module's mfg_nvs holds: ``factory_param``, and ``ble_data`` (the rows of
    esp-at's gatts_data.csv) on a module whose build has BLE commands."""
    facts = module_facts(profile)
    module = ModuleDefaults(facts.module_name, _UART_PORT, *facts.uart_pins)
    return [*factory_param_items(module), *(ble_data_items() if facts.ble else [])]


@dataclass(frozen=True)
class MfgStore:
    """The NVS image in one partition of the simulated flash."""

    flash: bytearray
    part: Partition

    def items(self) -> list[NvsItem] | None:
        """The stored items; None when the image does not parse."""
        try:
            return parse_nvs(bytes(self.flash[self.part.offset : self.part.end]))
        except AtflashError:
            return None

    def save(self, items: list[NvsItem]) -> bool:
        """Write a new image holding ``items``; False (flash unchanged) when it cannot be built."""
        try:
            image = build_nvs(items, self.part.size, name=self.part.name)
        except AtflashError:
            return False
        self.flash[self.part.offset : self.part.end] = image
        return True


def store_in(flash: bytearray, table: tuple[Partition, ...]) -> MfgStore | None:
    """The mfg_nvs store, or None when the table does not list mfg_nvs."""
    part = next((p for p in table if p.name == MFG_NVS_LABEL), None)
    return MfgStore(flash, part) if part is not None else None


def seed(flash: bytearray, table: tuple[Partition, ...], profile: Profile) -> None:
    """Give a new module the mfg_nvs esp-at's build flashes."""
    store = store_in(flash, table)
    if store is None or not store.save(factory_items(profile)):
        raise AtflashError(f"cannot build the factory mfg_nvs of {profile.name}")


def sysmfg(flash: bytearray, table: tuple[Partition, ...], args: str) -> Reply:
    """``AT+SYSMFG`` followed by ``args`` (``?`` or ``=...``)."""
    store = store_in(flash, table)
    items = store.items() if store is not None else None
    if store is None or items is None:
        return FAILED
    if args == "?":
        return _namespaces(items)
    params = split_params(args[1:]) if args.startswith("=") else None
    if not params or not isinstance(params[0], int):
        return FAILED
    op, *rest = params
    if op == SysmfgOp.ERASE:
        return _erase(store, items, rest)
    if op == SysmfgOp.READ:
        return _read(items, rest)
    if op == SysmfgOp.WRITE:
        return _write(store, rest)
    return FAILED


def _name(param: Param) -> str | None:
    if isinstance(param, str) and 1 <= len(param) <= MFG_NAME_MAX:
        return param
    return None


def _lines(lines: list[str]) -> Answer:
    return Answer("".join(f"{line}\r\n" for line in lines).encode("utf-8", "surrogateescape"))


def _namespaces(items: list[NvsItem]) -> Answer:
    names = dict.fromkeys(item.namespace for item in items)
    return _lines([f'+SYSMFG:"{ns}"' for ns in names])


def _find(items: list[NvsItem], ns: str, key: str) -> NvsItem | None:
    return next((i for i in items if i.namespace == ns and i.key == key), None)


def _read(items: list[NvsItem], rest: list[Param]) -> Answer:
    if not rest:
        return _namespaces(items)
    ns = _name(rest[0])
    if ns is None:
        return FAILED
    if len(rest) == 1:
        mine = [i for i in items if i.namespace == ns and i.type in _TYPE_CODES]
        if not mine:
            return FAILED
        return _lines([f'+SYSMFG:"{ns}","{i.key}",{_TYPE_CODES[i.type]:d}' for i in mine])
    key = _name(rest[1])
    item = _find(items, ns, key) if key is not None else None
    if item is None or item.type not in _TYPE_CODES or len(rest) not in (2, 4):
        return FAILED
    head = f'+SYSMFG:"{ns}","{item.key}",{_TYPE_CODES[item.type]:d},'
    if isinstance(item.value, int):
        if len(rest) == 4:
            return FAILED
        return _lines([f"{head}{_SIZES[item.type]},{item.value}"])
    raw = encode_text(item.value) if isinstance(item.value, str) else bytes(item.value)
    if len(rest) == 4:
        offset, length = rest[2], rest[3]
        if not isinstance(offset, int) or not isinstance(length, int):
            return FAILED
        if offset < 0 or length < 1 or offset + length > len(raw):
            return FAILED
        raw = raw[offset : offset + length]
    return Answer(f"{head}{len(raw)},".encode("utf-8", "surrogateescape") + raw + b"\r\n")


def _erase(store: MfgStore, items: list[NvsItem], rest: list[Param]) -> Answer:
    ns = _name(rest[0]) if rest else None
    if ns is None or len(rest) > 2:
        return FAILED
    if len(rest) == 1:
        kept = [i for i in items if i.namespace != ns]
    else:
        key = _name(rest[1])
        if key is None or _find(items, ns, key) is None:
            return FAILED
        kept = [i for i in items if not (i.namespace == ns and i.key == key)]
    if len(kept) == len(items):
        return Answer()  # nothing stored there: nothing to erase
    return Answer() if store.save(kept) else FAILED


def _write(store: MfgStore, rest: list[Param]) -> Reply:
    if len(rest) != 4:
        return FAILED
    ns, key, code, value = _name(rest[0]), _name(rest[1]), rest[2], rest[3]
    if ns is None or key is None or not isinstance(code, int) or not isinstance(value, int):
        return FAILED
    if code not in set(MfgType):
        return FAILED
    kind = MfgType(code)
    if kind in MFG_INT_RANGES:
        low, high = MFG_INT_RANGES[kind]
        if not low <= value <= high:
            return FAILED
        return _store(store, NvsItem(ns, key, MFG_TYPE_NAMES[kind], value))
    if not MFG_VALUE_MIN <= value <= MFG_VALUE_MAX:
        return FAILED

    def finish(data: bytes) -> Answer:
        # nvs_set_str takes a C string: it ends at the first NUL. The wire
        # carries bytes; surrogateescape keeps any of them through the str.
        text = data.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
        stored = text if kind == MfgType.STRING else data
        return _store(store, NvsItem(ns, key, MFG_TYPE_NAMES[kind], stored))

    # The release library's "OK and input prompt": OK first, then > alone.
    return DataPhase(OK + WRITE_PROMPT, value, finish)


def _store(store: MfgStore, new: NvsItem) -> Answer:
    """Put ``new`` in place of its key, or after the last item of its namespace."""
    items = store.items()
    if items is None:
        return FAILED
    at = next(
        (n for n, i in enumerate(items) if (i.namespace, i.key) == (new.namespace, new.key)), None
    )
    if at is not None:
        items[at] = new
    else:
        last = [n for n, i in enumerate(items) if i.namespace == new.namespace]
        items.insert(last[-1] + 1 if last else len(items), new)
    return Answer() if store.save(items) else FAILED
