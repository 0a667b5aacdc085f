"""Bad input to every command: one clear line, a non-zero exit, no traceback, nothing written.

One table, one row per bad input. Each row is a command line with
placeholders (``{ws}`` the folder of prepared bad files, ``{raw}`` ESP-AT's
sample credentials, ``{out}`` an output path that must not appear,
``{board}`` a mock ESP32's port) and what must come of it:

- ``error``: exactly one stderr line, ``atflash: error: ...``, nothing on stdout
  (with ``--json``: the error as JSON there);
- ``usage``: click's own usage error (argument grammar: a missing argument,
  an option value out of range), exit 2;
- ``board``: a board that was reached but failed (write, verify): the summary
  on stdout ends ``FAILED ...: <reason>``, every stderr line is a progress
  line of that port. A board never reached (no port, no answer) is an
  ``error``: there is nothing to show but the reason.

Every row runs in an empty working folder that must still be empty
afterwards. Rows that reach the mock board read the flash region of every
credential partition (and the board's partition table) back from the mock
directly, neither through atflash nor esptool, and check it is unchanged.

Adding a row: append a ``Case`` to ``CASES`` (and a file to ``workspace``
if it needs one). Manifests and the AT path will add their rows here.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import serial
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from serial.urlhandler import protocol_socket

from atflash.cli import cli
from atflash.content import pki
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_USER_ERROR
from atflash.layout.profiles import find_profile
from atflash.sim.flash import board_flash, flash_image
from atflash.sim.rom import MockBoard
from tests.support.samples import RAW
from tools.strictrom import start_strict

from .conftest import flash_holds

CERT = RAW / "client_cert" / "client_cert_00.crt"
KEY = RAW / "client_key" / "client_key_00.key"
OTHER_KEY = RAW / "client_key" / "client_key_01.key"
CONNECT = "--before no-reset --after no-reset"
PROFILE = find_profile("esp32")
# A name longer than any file system takes (255 bytes): Path.is_dir raises for it.
LONG = "x" * 300
# From the partition table to the end of the last credential partition.
WATCHED = (PROFILE.at_customize_offset, PROFILE.partition("mqtt_ca").end)


@dataclass(frozen=True)
class Case:
    """One bad input and what must come of it."""

    id: str
    args: str  # a command line, split like a shell would, then formatted
    match: str  # regex the error line (or the FAILED line) must contain
    code: int = EXIT_USER_ERROR
    style: str = "error"  # "error" | "usage" | "board"


D = EXIT_DEVICE_ERROR  # the rows that reach (or try to reach) a board
B = "--chip esp32 -o {out}"  # build: an output folder that must not appear
W = f"--chip esp32 --port {{board}} {CONNECT} --backup {{out}}/backups"  # write to the mock

CASES = [
    # -- generate-bin ---------------------------------------------------------------
    Case("gen-odd-count", "generate-bin -b {out}/o.bin cert {raw}/client_cert/client_cert_00.crt key", "TYPE FILE pairs.*'key' has no partner"),
    Case("gen-unknown-type", "generate-bin -b {out}/o.bin crt {ws}/small.txt", "unknown item type 'crt'"),
    Case("gen-no-arguments", "generate-bin -b {out}/o.bin", "Missing argument", style="usage"),
    Case("gen-missing-file", "generate-bin -b {out}/o.bin cert {ws}/nope.crt", r"nope\.crt: file not found"),
    Case("gen-65536-bytes", "generate-bin -b {out}/o.bin cert {ws}/big.crt", "65536 bytes, a PKI item holds at most 65535"),
    Case("gen-257-certificates", "generate-bin -b {out}/o.bin " + " ".join(["cert {ws}/small.txt"] * 257), "257 cert items.*at most 256"),
    Case("gen-directory-as-file", "generate-bin -b {out}/o.bin cert {ws}/certdir", "certdir: is a directory"),
    Case("gen-output-is-a-directory", "generate-bin -b {ws}/certdir cert {ws}/small.txt", "certdir: is a directory"),
    # -- parse-bin ------------------------------------------------------------------
    Case("parse-bad-magic", "parse-bin -b {ws}/bad_magic.bin -o {out}", "bad magic 12 34 .*at offset 0x0"),
    Case("parse-bad-length", "parse-bin -b {ws}/bad_length.bin -o {out}", "header length .* runs past .* at offset 0x4"),
    Case("parse-truncated-item", "parse-bin -b {ws}/truncated_item.bin -o {out}", r"item 1 \(1164 bytes\) is truncated"),
    Case("parse-unknown-item-type", "parse-bin -b {ws}/unknown_type.bin -o {out}", "unknown type 0x07 .* at offset 0x8"),
    Case("parse-bad-alignment-byte", "parse-bin -b {ws}/bad_align.bin -o {out}", "alignment byte is 0x00, not 0xFF"),
    Case("parse-extra-bytes-in-length", "parse-bin -b {ws}/extra_inside.bin -o {out}", "4 bytes after the last of 1 items"),
    Case("parse-empty-file", "parse-bin -b {ws}/empty.crt -o {out}", "only 0 bytes"),
    Case("parse-blank-partition", "parse-bin -b {ws}/blank.bin -o {out}", "partition is blank"),
    Case("parse-directory", "parse-bin -b {ws}/certdir -o {out}", "is a directory"),
    Case("parse-out-dir-is-a-file", "parse-bin -b {ws}/good.bin -o {ws}/small.txt", "cannot write"),
    # -- build: file content --------------------------------------------------------
    Case("build-truncated-pem", f"build {B} client_cert {{ws}}/truncated.crt", "truncated .*no -----END CERTIFICATE----- line"),
    Case("build-garbage-pem", f"build {B} client_cert {{ws}}/garbage.crt", "damaged and cannot be decoded"),
    Case("build-pem-without-certificate", f"build {B} client_cert {{ws}}/public.pem", "holds a public key, not a certificate"),
    Case("build-key-in-cert-partition", f"build {B} client_cert {{raw}}/client_key/client_key_00.key", "holds a private key, not a certificate"),
    Case("build-cert-in-key-partition", f"build {B} client_key {{raw}}/client_cert/client_cert_00.crt", "holds a certificate, not a private key"),
    Case("build-binary-junk", f"build {B} client_ca {{ws}}/junk.bin", "neither a PEM nor a DER certificate"),
    Case("build-empty-file", f"build {B} client_cert {{ws}}/empty.crt", "file is empty"),
    Case("build-65536-bytes", f"build {B} client_cert {{ws}}/big.crt", "65536 bytes, a PKI item holds at most 65535"),
    Case("build-encrypted-key", f"build {B} client_key {{ws}}/encrypted.key", "encrypted"),
    Case("build-directory-as-file", f"build {B} client_cert {{ws}}/certdir", "is a directory"),
    Case("build-glob-matches-nothing", f"build {B} client_cert {{ws}}/nothing*.crt", "no file matches this pattern"),
    Case("build-ready-bin-of-wrong-type", f"build {B} client_key {{ws}}/good.bin", "holds cert items but partition client_key takes key items"),
    Case("build-ready-bin-truncated", f"build {B} client_cert {{ws}}/truncated_item.bin", "is truncated"),
    Case("build-ready-bin-mixed-with-files", f"build {B} client_cert {{ws}}/good.bin {{raw}}/client_cert/client_cert_01.crt", "cannot be mixed"),
    Case("build-pair-mismatch", f"build {B} client_cert {{raw}}/client_cert/client_cert_00.crt client_key {{raw}}/client_key/client_key_01.key", r"does not match key .*client_key_01\.key \(ID 0\)"),
    # -- build: partitions ----------------------------------------------------------
    Case("build-unknown-partition", f"build {B} clent_cert {{raw}}/client_cert/client_cert_00.crt", "'clent_cert' is not a partition name"),
    Case("build-non-pki-partition", f"build {B} ble_data {{ws}}/small.txt", "ble_data does not hold PKI items"),
    Case("build-partition-twice", f"build {B} client_cert {{raw}}/client_cert/client_cert_00.crt client_cert {{raw}}/client_cert/client_cert_01.crt", "client_cert is given twice"),
    Case("build-partition-without-files", f"build {B} client_cert client_key {{raw}}/client_key/client_key_00.key", "client_cert: no files given"),
    Case("build-too-big-one-file", f"build {B} client_cert {{ws}}/long.crt", r"client_cert: image is \d+ bytes but the partition holds 8192"),
    Case("build-too-big-several-files", f"build {B} client_cert " + " ".join(["{raw}/client_cert/client_cert_00.crt"] * 8), "client_cert: image is 9352 bytes but the partition holds 8192, 1160 bytes too many"),
    Case("build-output-dir-is-a-file", "build --chip esp32 -o {ws}/small.txt client_cert {raw}/client_cert/client_cert_00.crt", "cannot write"),
    # -- profiles: chips, TOML files, at_customize.csv --------------------------------
    Case("build-unknown-chip", "build --chip esp99 -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "unknown chip or profile 'esp99'"),
    Case("build-no-chip", "build -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "no chip given"),
    Case("build-profile-overlap", "build --profile {ws}/overlap.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "partitions client_cert .* and client_key .* overlap"),
    Case("build-profile-misaligned", "build --profile {ws}/misaligned.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "offset 0x2a800 is not 4 KB aligned"),
    Case("build-profile-unknown-chip", "build --profile {ws}/unknown_chip.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "unknown chip 'esp99'"),
    Case("build-profile-past-flash", "build --profile {ws}/past_flash.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "extra: ends at 0x401000, past the 4MB flash"),
    Case("build-profile-duplicate-name", "build --profile {ws}/duplicate.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "duplicate partition name 'client_cert'"),
    Case("build-profile-missing-field", "build --profile {ws}/missing_field.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "missing required field 'at_customize_offset'"),
    Case("build-profile-not-toml", "build --profile {ws}/not_toml.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "not a valid TOML profile"),
    Case("build-profile-missing", "build --profile {ws}/nope.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "nope.toml: profile file not found"),
    Case("build-csv-bad-size", "build --chip esp32 --profile {ws}/bad_size.csv -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "line 3: size '8Q' is not a number"),
    Case("build-csv-leading-zero", "build --chip esp32 --profile {ws}/leading_zero.csv -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "line 1: size '08K' is not a number"),
    Case("build-csv-too-few-fields", "build --chip esp32 --profile {ws}/few_fields.csv -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "line 2: expected name, type, subtype, offset, size; got 3 fields"),
    Case("build-csv-without-chip", "build --profile {ws}/bad_size.csv -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "does not name its chip"),
    # -- inspect, profiles, partitions ----------------------------------------------
    Case("inspect-bad-length", "inspect {ws}/bad_length.bin", "header length"),
    Case("inspect-bad-length-json", "inspect --json {ws}/bad_length.bin", "header length"),
    Case("inspect-missing-file", "inspect {ws}/nope.bin", "nope.bin: file not found"),
    Case("inspect-glob-matches-nothing", "inspect {ws}/*.nothing", "no file matches this pattern"),
    Case("inspect-directory", "inspect {ws}/certdir", "is a directory"),
    Case("inspect-bad-option-value", "inspect --expiring-days soon {ws}/junk.bin", "'soon' is not a valid integer", style="usage"),
    Case("profiles-extra-argument", "profiles esp32", "unexpected extra argument", style="usage"),
    Case("sim-rom-unknown-chip", "sim rom --chip esp99", "Invalid value for '--chip'", style="usage"),
    Case("partitions-unknown-chip", "partitions --chip esp99", "unknown chip or profile 'esp99'"),
    Case("partitions-profile-overlap", "partitions --profile {ws}/overlap.toml", "overlap"),
    Case("partitions-csv-too-few-fields", "partitions --chip esp32 --profile {ws}/few_fields.csv", "got 3 fields"),
    # -- write / read / verify / partitions against the mock board: refused, flash unchanged
    # Fits esp32-3x's mfg_nvs, so the board is read: its own layout (2.x) refuses it.
    Case("write-too-big", f"write {W} client_cert " + " ".join(["{raw}/client_cert/client_cert_00.crt"] * 8), "the board's tables are layout esp32, which cannot take this: client_cert: image is 9352 bytes but the partition holds 8192", code=EXIT_DEVICE_ERROR, style="board"),
    Case("write-too-big-for-every-layout", f"write --chip esp32 --profile esp32 --port {{board}} {CONNECT} client_cert " + " ".join(["{raw}/client_cert/client_cert_00.crt"] * 8), "9352 bytes but the partition holds 8192"),
    Case("write-pair-mismatch", f"write {W} client_cert {{raw}}/client_cert/client_cert_00.crt client_key {{raw}}/client_key/client_key_01.key", "does not match key"),
    Case("write-unknown-partition", f"write {W} client_crt {{raw}}/client_cert/client_cert_00.crt", "'client_crt' is not a partition name"),
    Case("write-non-pki-partition", f"write {W} ble_data {{ws}}/small.txt", "ble_data does not hold PKI items"),
    Case("write-encrypted-key", f"write {W} client_key {{ws}}/encrypted.key", "encrypted"),
    Case("write-truncated-bin", f"write {W} client_cert {{ws}}/truncated_item.bin", "is truncated"),
    Case("write-profile-overlap", f"write --profile {{ws}}/overlap.toml --port {{board}} {CONNECT} client_cert {{raw}}/client_cert/client_cert_00.crt", "overlap"),
    Case("write-wrong-chip", f"write --chip esp32c3 --port {{board}} {CONNECT} --backup {{out}}/backups client_cert {{raw}}/client_cert/client_cert_00.crt", "board is an esp32, but the profile is for esp32c3", D, "board"),
    Case("read-wrong-chip", f"read --chip esp32c3 --port {{board}} {CONNECT} -o {{out}}/dump.bin client_cert", "board is an esp32, but the profile is for esp32c3", D),
    Case("read-unknown-partition", f"read --chip esp32 --port {{board}} {CONNECT} -o {{out}}/dump.bin client_crt", "no partition 'client_crt' in the esp32 layouts"),
    # Refused before the port opens (a closed port would say so otherwise): no board is reset for a typo.
    Case("read-unknown-partition-before-connecting", f"read --port {{closed}} {CONNECT} client_crt", "no partition 'client_crt'"),
    Case("verify-wrong-chip", f"verify --chip esp32c3 --port {{board}} {CONNECT} client_cert {{raw}}/client_cert/client_cert_00.crt", "board is an esp32", D, "board"),
    Case("partitions-port-wrong-chip", f"partitions --chip esp32c3 --port {{board}} {CONNECT}", "board is an esp32", D),
    # -- baud rates: click bounds the number; a rate the port's driver refuses is a device error
    Case("read-baud-zero", f"read --chip esp32 --port {{board}} {CONNECT} --baud 0 client_cert", "0 is not in the range 1200<=x<=5000000", style="usage"),
    Case("write-baud-too-high", f"write {W} --baud 9000000 client_cert {{raw}}/client_cert/client_cert_00.crt", "9000000 is not in the range", style="usage"),
    Case("read-baud-refused-by-driver", f"read --chip esp32 --port {{choosy}} {CONNECT} --baud 3000000 -o {{out}}/dump.bin client_cert", "Failed to set baud rate 3000000", D),
    Case("write-baud-refused-by-driver", f"write --chip esp32 --port {{choosy}} {CONNECT} --baud 3000000 client_cert {{raw}}/client_cert/client_cert_00.crt", "Failed to set baud rate 3000000", D),
    # -- ports that do not exist or cannot be opened (no board needed)
    Case("write-port-does-not-exist", f"write --chip esp32 --port /dev/ttyNOPE0 {CONNECT} client_cert {{raw}}/client_cert/client_cert_00.crt", "/dev/ttyNOPE0", D),
    Case("write-port-is-a-directory", f"write --chip esp32 --port {{ws}}/certdir {CONNECT} client_cert {{raw}}/client_cert/client_cert_00.crt", "certdir", D),
    Case("write-port-is-a-regular-file", f"write --chip esp32 --port {{ws}}/junk.bin {CONNECT} client_cert {{raw}}/client_cert/client_cert_00.crt", "junk.bin", D),
    Case("write-port-nothing-listens", f"write --chip esp32 --port {{closed}} {CONNECT} client_cert {{raw}}/client_cert/client_cert_00.crt", "nothing is listening at this address", D),
    Case("read-port-does-not-exist", f"read --chip esp32 --port /dev/ttyNOPE0 {CONNECT} -o {{out}}/dump.bin client_cert", "/dev/ttyNOPE0", D),
    Case("read-port-nothing-listens", f"read --chip esp32 --port {{closed}} {CONNECT} client_cert", "nothing is listening at this address", D),
    Case("verify-port-is-a-directory", f"verify --chip esp32 --port {{ws}}/certdir {CONNECT} client_cert {{raw}}/client_cert/client_cert_00.crt", "certdir", D),
    Case("partitions-port-does-not-exist", f"partitions --port /dev/ttyNOPE0 {CONNECT}", "/dev/ttyNOPE0", D),
    # -- keys where they belong: no key in a certificate partition, usable key types, inputs kept
    Case("build-certificate-with-its-key", f"build {B} client_cert {{ws}}/combo.pem", r"combo\.pem: holds a private key; give the certificate alone"),
    Case("build-ca-der-with-a-key", f"build {B} client_ca {{ws}}/combo.der", r"combo\.der: holds a private key; give the certificate alone"),
    Case("build-ready-bin-cert-item-with-key", f"build {B} client_cert {{ws}}/combo.bin", r"combo\.bin\[0\]: holds a private key"),
    Case("gen-certificate-with-its-key", "generate-bin -b {out}/o.bin cert {ws}/combo.pem", "holds a private key; give the certificate alone"),
    Case("build-ed25519-key", f"build {B} client_key {{ws}}/ed25519.key", "holds an Ed25519 key, which ESP-AT cannot use: ESP-AT takes RSA keys"),
    Case("build-ready-bin-ed25519-key", f"build {B} client_key {{ws}}/ed25519.bin", r"ed25519\.bin\[0\]: holds an Ed25519 key"),
    Case("gen-ed25519-key", "generate-bin -b {out}/o.bin key {ws}/ed25519.key", "--no-key-type-check"),
    Case("gen-output-is-its-input", "generate-bin -b {ws}/small.txt cert {ws}/small.txt", r"small\.txt: is also an input of this command"),
    Case("parse-output-is-its-input", "parse-bin -b {ws}/key_00.key -o {ws}", r"key_00\.key: is also an input of this command"),
    Case("build-output-is-its-input", "build --chip esp32 -o {ws} client_cert {ws}/client_cert.bin", r"client_cert\.bin: is also an input of this command"),
    # -- every input read with a bound
    Case("check-huge-bench-file", "check --config {ws}/huge.toml", r"huge\.toml: cannot read the bench file: \d+ bytes, a bench file holds at most"),
    Case("check-manifest-short-row", "check --config {ws}/short_bench.toml", r"short\.csv:3: 2 cells but the header has 3 columns"),
    Case("check-huge-manifest", "check --config {ws}/huge_bench.toml", r"huge\.csv: cannot read the manifest: \d+ bytes, a manifest holds at most"),
    Case("build-huge-profile", "build --profile {ws}/huge.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "a profile holds at most"),
    Case("build-huge-csv", "build --chip esp32 --profile {ws}/huge.csv -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "an at_customize.csv holds at most"),
    Case("inspect-huge-file", "inspect {ws}/huge.toml", "a PKI bin or partition dump holds at most"),
    *([
        Case("check-bench-is-a-fifo", "check --config {ws}/pipe.toml", r"pipe\.toml: cannot read the bench file: is a pipe \(FIFO\)"),
        Case("build-credential-is-a-fifo", f"build {B} client_cert {{ws}}/pipe.toml", r"pipe\.toml: is a pipe \(FIFO\), not a regular file"),
        Case("check-bench-is-dev-zero", "check --config /dev/zero", "/dev/zero: cannot read the bench file: is a character device"),
        Case("write-only-failed-report-is-a-fifo", "write --chip esp32 --only-failed {ws}/pipe.toml client_cert {raw}/client_cert/client_cert_00.crt", r"pipe\.toml: cannot read the report: is a pipe \(FIFO\)"),
    ] if hasattr(os, "mkfifo") else []),
    Case("write-only-failed-huge-report", "write --chip esp32 --only-failed {ws}/huge.toml client_cert {raw}/client_cert/client_cert_00.crt", r"huge\.toml: cannot read the report: \d+ bytes, a report holds at most"),
    # -- where a run writes: checked before any board, never over an input
    Case("write-report-folder-is-a-file", f"write {W} --report {{ws}}/small.txt/run.json client_cert {{raw}}/client_cert/client_cert_00.crt", r"small\.txt: is not a folder, so the report cannot go in"),
    Case("write-backup-folder-under-a-file", f"write --chip esp32 --port {{board}} {CONNECT} --backup {{ws}}/small.txt/backups client_cert {{raw}}/client_cert/client_cert_00.crt", r"small\.txt: is not a folder, so backups cannot go in"),
    Case("check-report-folder-is-a-file", "check --config {ws}/bad_report_bench.toml", r"small\.txt: is not a folder, so the report cannot go in"),
    Case("read-output-is-its-profile", f"read --profile {{ws}}/esp32.toml --port {{board}} {CONNECT} -o {{ws}}/esp32.toml client_cert", r"esp32\.toml: is also an input of this command"),
    # -- names too long for the file system ({long}): one line, never an internal error
    Case("gen-output-name-too-long", "generate-bin -b {long}.bin cert {raw}/client_cert/client_cert_00.crt", r"x\.bin: cannot write \(File name too long\)"),
    Case("build-glob-name-too-long", f"build {B} client_cert {{long}}/**", "no file matches this pattern"),
    Case("build-output-name-too-long", "build --chip esp32 -o {long} client_cert {raw}/client_cert/client_cert_00.crt", "File name too long"),
    Case("build-profile-name-too-long", "build --profile {long}.toml -o {out} client_cert {raw}/client_cert/client_cert_00.crt", "profile file not found"),
    Case("inspect-name-too-long", "inspect {long}", "File name too long"),
    Case("parse-name-too-long", "parse-bin -b {long} -o {out}", "File name too long"),
    Case("pool-name-too-long", "pool check {long} --chip esp32", "no such folder or file"),
    Case("ledger-name-too-long", "ledger show {long}.db", "no such ledger file"),
    Case("write-report-name-too-long", f"write {W} --report {{ws}}/new/{{long}}.json client_cert {{raw}}/client_cert/client_cert_00.crt", "name too long for the file system: give --report another file name"),
    Case("write-backup-name-too-long", f"write --chip esp32 --port {{board}} {CONNECT} --backup {{long}} client_cert {{raw}}/client_cert/client_cert_00.crt", "name too long for the file system: give --backup another folder name"),
    # -- sim rom
    Case("sim-rom-bad-mac", "sim rom --mac 24:0a:c4:00:00", "'24:0a:c4:00:00' is not a MAC address"),
    Case("sim-rom-multicast-mac", "sim rom --mac 01:00:5e:00:00:01", "multicast or all-zero MAC"),
]  # fmt: skip


# -- prepared bad files ------------------------------------------------------------------


def _profile_text(*, replace: tuple[str, str] | None = None, append: str = "") -> str:
    text = (Path(__file__).resolve().parents[2] / "profiles" / "esp32.toml").read_text()
    if replace is not None:
        assert text.count(replace[0]) == 1, replace[0]
        text = text.replace(*replace)
    return text + append


def _extra_partition(name: str, offset: int) -> str:
    return f'\n[[partitions]]\nname = "{name}"\nsubtype = 20\noffset = {offset:#x}\nsize = 0x2000\n'


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every bad input file, made once per module (rows only read them)."""
    ws = tmp_path_factory.mktemp("bad-inputs")
    cert, key = CERT.read_bytes(), KEY.read_bytes()
    good = pki.build([("cert", cert, None), ("cert", cert, None)])  # 2 x 1164 bytes, no padding
    with_key = pki.build([("key", key, None)])  # 1675 bytes: one alignment byte
    files: dict[str, bytes] = {
        "small.txt": b"just text\n",
        "truncated.crt": cert[:300],
        "garbage.crt": b"-----BEGIN CERTIFICATE-----\nnot*base64!\n-----END CERTIFICATE-----\n",
        "junk.bin": bytes(range(256)) * 16,
        "empty.crt": b"",
        "big.crt": b"A" * 65536,
        "long.crt": b"notes: " + b"x" * 9000 + b"\n" + cert,
        "good.bin": good,
        "bad_magic.bin": b"\x12\x34" + good[2:],
        "bad_length.bin": good[:4] + (len(good)).to_bytes(4, "little") + good[8:],
        "truncated_item.bin": good[:4] + (len(good) - 108).to_bytes(4, "little") + good[8:-100],
        "unknown_type.bin": good[:8] + b"\x07" + good[9:],
        "bad_align.bin": with_key[:-1] + b"\x00",
        "extra_inside.bin": pki.HEADER.pack(pki.MAGIC, 1, len(with_key) - 8 + 4) + with_key[8:] + b"\xff" * 4,
        "blank.bin": b"\xff" * 0x2000,
        "encrypted.key": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        "public.pem": ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }  # fmt: skip
    profiles = {
        "overlap.toml": _profile_text(replace=("offset = 0x2c000", "offset = 0x2b000")),
        "misaligned.toml": _profile_text(replace=("offset = 0x2a000", "offset = 0x2a800")),
        "unknown_chip.toml": _profile_text(replace=('chip = "esp32"', 'chip = "esp99"')),
        "past_flash.toml": _profile_text(append=_extra_partition("extra", 0x3FF000)),
        "duplicate.toml": _profile_text(append=_extra_partition("client_cert", 0x3F0000)),
        "missing_field.toml": _profile_text(
            replace=("at_customize_offset = 0x20000\n", "# no table offset\n")
        ),
        "not_toml.toml": "name = esp32\n[[partitions\n",
        "bad_size.csv": "# Name, Type, SubType, Offset, Size\nble_data, 0x40, 1, 0x21000, 12K\n"
        "client_cert, 0x40, 5, 0x2A000, 8Q\n",
        "leading_zero.csv": "server_cert, 0x40, 2, 0x24000, 08K\n",
        "few_fields.csv": "ble_data, 0x40, 1, 0x21000, 12K\nclient_cert, 0x40, 5\n",
        "esp32.toml": _profile_text(),
        "bad_report_bench.toml": f'chip = "esp32"\nreport = "small.txt/run.json"\n'
        f'[partitions]\nclient_ca = "{RAW / "client_ca" / "client_ca_00.crt"}"\n',
    }
    ed_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der_key = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der_cert = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    files |= {
        "combo.pem": cert + key,
        "combo.der": der_cert + der_key,
        "combo.bin": pki.build([("cert", cert + key, None)]),
        "ed25519.key": ed_key,
        "ed25519.bin": pki.build([("key", ed_key, None)]),
        "key_00.key": with_key,
        "client_cert.bin": good,
    }  # fmt: skip
    for name, data in files.items():
        (ws / name).write_bytes(data)
    for name in ("huge.toml", "huge.csv"):
        with (ws / name).open("wb") as handle:
            handle.truncate(32 * 1024**3)  # sparse: no space taken, minutes to read
    cert_path, key_path = RAW / "client_cert" / "client_cert_00.crt", KEY
    (ws / "short.csv").write_text(
        f"mac,client_cert,client_key\n24:0a:c4:00:00:01,{cert_path},{key_path}\n"
        f"24:0a:c4:00:00:02,{cert_path}\n"
    )
    (ws / "short_bench.toml").write_text('chip = "esp32"\nmanifest = "short.csv"\n')
    (ws / "huge_bench.toml").write_text('chip = "esp32"\nmanifest = "huge.csv"\n')
    if hasattr(os, "mkfifo"):
        os.mkfifo(ws / "pipe.toml")
    for name, text in profiles.items():
        (ws / name).write_text(text)
    (ws / "certdir").mkdir()
    (ws / "certdir" / "inside.crt").write_bytes(cert)
    return ws


# -- the mock board and odd ports ----------------------------------------------------------


@pytest.fixture(scope="module")
def board() -> Iterator[MockBoard]:
    """One ESP32 mock with ESP-AT's table, shared: no row may write to it."""
    mock = start_strict("esp32", flash=board_flash("esp32"))
    try:
        yield mock
    finally:
        mock.stop()


def expected_flash() -> bytes:
    """What the watched region holds on the fresh mock (an ESP-AT 2.x factory image)."""
    image = flash_image(board_flash("esp32"), WATCHED[1])
    return bytes(image[WATCHED[0] : WATCHED[1]])


def flash_unchanged(board: MockBoard) -> bool:
    """The watched region read back whole from the mock."""
    return flash_holds(board, WATCHED[0], expected_flash())


class ChoosyDriverSerial(protocol_socket.Serial):
    """``choosy://host:port``: a socket port whose driver refuses rates above 115200.

    Stands in for a USB-serial bridge that cannot do the rate asked for:
    pyserial raises the OSError of the driver's ioctl, as it does on Linux.
    Every instance is kept in ``opened`` so a test can see which were left open.
    """

    MAX_BAUD = 115200
    opened: ClassVar[list[ChoosyDriverSerial]] = []

    def open(self) -> None:
        super().open()
        self.opened.append(self)

    def from_url(self, url: str) -> tuple[str, int]:
        host, port = super().from_url("socket" + url[len("choosy") :])
        return host, port

    def _reconfigure_port(self) -> None:
        super()._reconfigure_port()
        if self._baudrate > self.MAX_BAUD:
            raise OSError(errno.EINVAL, "Invalid argument")


@pytest.fixture
def choosy_scheme(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ChoosyDriverSerial]]:
    """Register ``choosy://`` with pyserial's URL handlers for one test; yields the opened ports."""
    package = types.ModuleType("atflash_test_urls")
    package.__path__ = []
    handler = types.ModuleType("atflash_test_urls.protocol_choosy")
    handler.Serial = ChoosyDriverSerial  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, handler.__name__, handler)
    monkeypatch.setattr(
        serial, "protocol_handler_packages", [*serial.protocol_handler_packages, package.__name__]
    )
    ChoosyDriverSerial.opened.clear()
    yield ChoosyDriverSerial.opened
    release(ChoosyDriverSerial.opened)


def release(ports: list[ChoosyDriverSerial]) -> list[ChoosyDriverSerial]:
    """Close the ports left open (the mock serves one connection at a time); return them."""
    leaked = [p for p in ports if p.is_open]
    for port in leaked:
        port.close()
    return leaked


# -- the test ----------------------------------------------------------------------------


def command_line(case: Case, **places: str) -> list[str]:
    return [arg.format(**places) for arg in shlex.split(case.args)]


def check_output(case: Case, code: int, stdout: str, stderr: str) -> None:
    everything = stdout + stderr
    assert "Traceback" not in everything
    assert "internal error" not in everything
    assert code == case.code, everything
    if case.style == "error":
        if "--json" in case.args:  # scripts get the error as JSON on stdout too
            assert "error" in json.dumps(json.loads(stdout)), stdout
        else:
            assert stdout == ""
        lines = stderr.splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("atflash: error: ")
        assert re.search(case.match, lines[0]), lines[0]
    elif case.style == "usage":
        assert stdout == ""
        assert stderr.startswith("Usage: atflash ")
        assert re.search(case.match, stderr.splitlines()[-1]), stderr
    else:  # the write path's board result
        last = stdout.splitlines()[-1]
        assert last.startswith("FAILED "), stdout
        assert re.search(case.match, last), last
        port = stdout.splitlines()[0].split(": ")[0]
        assert all(line.startswith(f"{port}: ") for line in stderr.splitlines()), stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    places = {"ws": str(workspace), "raw": str(RAW), "out": str(tmp_path / "out"), "long": LONG}
    uses_board = "{board}" in case.args or "{choosy}" in case.args
    if uses_board:
        mock: MockBoard = request.getfixturevalue("board")
        places["board"] = mock.url
        places["choosy"] = mock.url.replace("socket://", "choosy://")
        opened = request.getfixturevalue("choosy_scheme")
    if "{closed}" in case.args:
        places["closed"] = request.getfixturevalue("dead_port")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # generate-bin and parse-bin default to the working folder
    before = sorted(p.name for p in workspace.rglob("*"))

    result = CliRunner().invoke(
        cli, command_line(case, **places), prog_name="atflash", catch_exceptions=False
    )

    check_output(case, result.exit_code, result.stdout, result.stderr)
    assert list(work.iterdir()) == [], "output left in the working folder"
    assert not (tmp_path / "out").exists(), "output left behind"
    assert sorted(p.name for p in workspace.rglob("*")) == before, "output among the inputs"
    if uses_board:
        # A leaked connection would keep the shared mock busy: that bug has its
        # own test (test_failed_connect_releases_the_port).
        release(opened)
        assert flash_unchanged(mock), "the refused command changed the flash"


def test_table_covers_every_command() -> None:
    """Each existing command has bad-input rows (new commands must add theirs)."""
    commands = {c.args.split()[0] for c in CASES}
    assert commands >= {"generate-bin", "parse-bin", "build", "inspect", "profiles", "partitions",
                        "write", "read", "verify"}  # fmt: skip
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


def test_failed_connect_releases_the_port(
    board: MockBoard, choosy_scheme: list[ChoosyDriverSerial]
) -> None:
    """A board whose driver refuses the baud rate: the command fails and lets go of the port.

    A held port is busy for every later attempt (a retry, the next batch
    round, another program), and the mock board serves one connection at a
    time, just like a serial port can be opened once.
    """
    url = board.url.replace("socket://", "choosy://")
    args = ["read", "--chip", "esp32", "--port", url, *CONNECT.split(), "--baud", "3000000", "client_cert"]  # fmt: skip
    result = CliRunner().invoke(cli, args, prog_name="atflash", catch_exceptions=False)
    assert result.exit_code == EXIT_DEVICE_ERROR
    assert choosy_scheme, "the port was never opened"
    assert release(choosy_scheme) == []


@pytest.mark.parametrize(
    "port",
    [
        pytest.param("/dev/ttyNOPE0", id="does-not-exist"),
        pytest.param("{closed}", id="nothing-listens"),
        pytest.param("{ws}/certdir", id="directory"),
        pytest.param("{ws}/junk.bin", id="regular-file"),
    ],
)
def test_port_errors_name_the_port_once(port: str, workspace: Path, dead_port: str) -> None:
    """A port that cannot be opened: atflash's words, the port once, no esptool hint."""
    port = port.format(ws=workspace, closed=dead_port)
    args = ["read", "--chip", "esp32", "--port", port, *CONNECT.split(), "client_cert"]
    result = CliRunner().invoke(cli, args, prog_name="atflash", catch_exceptions=False)
    assert result.exit_code == EXIT_DEVICE_ERROR
    line = result.stderr.strip()
    assert line.startswith(f"atflash: error: {port}: ")
    assert line.count(port) == 1, line
    assert "Hint:" not in line and "Errno" not in line, line


def test_write_failure_line_names_the_port_once() -> None:
    args = ["write", "--chip", "esp32", "--port", "/dev/ttyNOPE0", *CONNECT.split(),
            "client_cert", str(CERT)]  # fmt: skip
    result = CliRunner().invoke(cli, args, prog_name="atflash", catch_exceptions=False)
    assert result.exit_code == EXIT_DEVICE_ERROR
    assert result.stderr.strip()
    for line in result.stderr.splitlines():
        assert line.count("/dev/ttyNOPE0") == 1, line
