"""Espressif's NVS partition generator CSV (``key,type,encoding,value``), read into NVS items.

The format ``esp-idf-nvs-partition-gen`` and esp-at's ``mfg_nvs.py`` take::

    key,type,encoding,value
    factory_param,namespace,,
    version,data,i8,4
    module_name,data,string,MINI-1
    ble_data,namespace,,
    cfg0,data,string,"0,16,0x2800,0x01,2,2,A002"
    blob,file,binary,ble/blob.bin

A ``namespace`` row opens a namespace for the rows after it. ``data`` rows
hold an integer (``u8`` ... ``i64``, decimal as the generator reads them with
``int()``) or a ``string``; ``file`` rows with encoding ``binary`` hold a
file's bytes. Lines starting with ``#`` are comments, as in the generator.

What differs from the generator, and why: a relative ``file`` path is taken
from the CSV's folder, not the current directory (the CSV then works from
anywhere, as a manifest does); the other encodings (``hex2bin``,
``base64``, ``blob_fill``...) and the generator's Wi-Fi extras are refused
with the line, since atflash only needs the rows of ``factory_param`` and
``ble_data``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import cast

from atflash.content.nvs import MAX_NAME, PRIMITIVES, NvsItem, NvsType, int_range
from atflash.errors import AtflashError, ManifestError
from atflash.files import read_bounded

HEADER = ("key", "type", "encoding", "value")
MAX_CSV = 1024 * 1024  # a factory_param CSV is a few hundred bytes
MAX_FILE = 1024 * 1024  # larger than any mfg_nvs partition (148K at most)
DATA_ENCODINGS = (*PRIMITIVES, "string")
FILE_ENCODINGS = ("binary",)


def load_nvs_csv(path: str | Path) -> list[NvsItem]:
    """The items a generator CSV describes, in its order; files read from the CSV's folder.

    Raises :class:`~atflash.errors.ManifestError` naming the file and line.
    """
    path = Path(path)
    try:
        raw = read_bounded(path, MAX_CSV, "an NVS CSV")
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(str(path), None, "not UTF-8 text, not an NVS CSV") from None
    return parse_nvs_csv(text, source=str(path), base=path.parent)


def parse_nvs_csv(text: str, *, source: str, base: Path) -> list[NvsItem]:
    """Parse generator CSV text (see the module docstring); ``base`` anchors relative files."""
    rows = _rows(text, source)
    if not rows:
        raise ManifestError(source, None, "empty", hint=f"start with the header {','.join(HEADER)}")
    header_line, header = rows[0]
    if tuple(cell.strip().lower() for cell in header[:4]) != HEADER:
        raise ManifestError(
            source, header_line, f"the header is {','.join(header)!r}",
            hint=f"an NVS generator CSV starts with {','.join(HEADER)}",
        )  # fmt: skip
    items: list[NvsItem] = []
    namespace: str | None = None
    for line, cells in rows[1:]:
        key, kind, encoding, value = [*cells, "", "", "", ""][:4]
        key, kind, encoding = key.strip(), kind.strip().lower(), encoding.strip().lower()
        _check_name(key, source, line)
        if kind == "namespace":
            namespace = key
            continue
        if namespace is None:
            raise ManifestError(
                source, line, f"{key}: no namespace row before it",
                hint="put e.g. 'factory_param,namespace,,' first",
            )  # fmt: skip
        try:
            items.append(_item(namespace, key, kind, encoding, value, base))
        except AtflashError as exc:
            raise ManifestError(source, line, str(exc)) from None
    return items


def _rows(text: str, source: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text))
    out = []
    try:
        for cells in reader:
            if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
                continue
            out.append((reader.line_num, cells))
    except csv.Error as exc:
        raise ManifestError(source, reader.line_num, f"not valid CSV ({exc})") from None
    return out


def _check_name(key: str, source: str, line: int) -> None:
    if not key:
        raise ManifestError(source, line, "empty key")
    if len(key.encode("utf-8")) > MAX_NAME:
        raise ManifestError(
            source, line, f"key {key!r} is longer than the {MAX_NAME} characters NVS allows"
        )


def _item(namespace: str, key: str, kind: str, encoding: str, value: str, base: Path) -> NvsItem:
    if kind == "data":
        if encoding not in DATA_ENCODINGS:
            raise ManifestError(
                key, None, f"data encoding {encoding!r} is not supported",
                hint=f"use one of {', '.join(DATA_ENCODINGS)}",
            )  # fmt: skip
        if encoding == "string":
            return NvsItem(namespace, key, "string", value)
        return NvsItem(namespace, key, cast(NvsType, encoding), _integer(key, encoding, value))
    if kind == "file":
        if encoding not in FILE_ENCODINGS:
            raise ManifestError(
                key, None, f"file encoding {encoding!r} is not supported",
                hint="use binary (the file's bytes as they are)",
            )  # fmt: skip
        path = base / value.strip()
        return NvsItem(namespace, key, "binary", read_bounded(path, MAX_FILE, "an NVS value"))
    raise ManifestError(
        key, None, f"type {kind!r} is not one the generator knows",
        hint="use namespace, data or file",
    )  # fmt: skip


def _integer(key: str, encoding: str, value: str) -> int:
    try:
        number = int(value.strip())  # the generator's int(): decimal only
    except ValueError:
        raise ManifestError(key, None, f"{value!r} is not a decimal integer") from None
    low, high = int_range(cast(NvsType, encoding))
    if not low <= number <= high:
        raise ManifestError(key, None, f"{number} is out of range for {encoding} ({low}..{high})")
    return number
