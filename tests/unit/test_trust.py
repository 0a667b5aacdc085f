"""Keys where they belong, and inputs that cannot hurt: the library side.

Private keys never in certificate items, key types the firmware can use,
outputs never over inputs, every file read with a bound (FIFOs and devices
refused without blocking), short manifest rows refused, MACs for mock boards.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from atflash.content import keys, pki
from atflash.content.checks import check_items, validate_item
from atflash.content.describe import describe_credential, inspect_bytes
from atflash.errors import ContentError, FileInputError, ManifestError, TooBigError
from atflash.files import read_bounded
from atflash.layout.profiles import find_profile
from atflash.output import write_outputs, write_private
from atflash.planning.manifest import parse_manifest
from atflash.planning.plan import PartitionRequest, PlanOptions, build_plan
from atflash.sim.rom import distinct_mac, parse_mac
from tools.certs import DER, PEM, PKCS8, PLAIN, certificate, key_bytes

ESP32 = find_profile("esp32")
needs_posix = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and /dev need a Unix host")


def cert_for(key: PrivateKeyTypes, encoding: serialization.Encoding = PEM) -> bytes:
    return certificate(key, common_name="device 9", serial=9).public_bytes(encoding)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def bundles(key: ec.EllipticCurvePrivateKey) -> dict[str, bytes]:
    """Every way a certificate file can carry its key along."""
    cert_pem, cert_der = cert_for(key), cert_for(key, DER)
    key_pem, key_der = key_bytes(key), key_bytes(key, DER)
    encrypted = key.private_bytes(PEM, PKCS8, serialization.BestAvailableEncryption(b"pw"))
    sec1 = key.private_bytes(PEM, serialization.PrivateFormat.TraditionalOpenSSL, PLAIN)
    return {
        "pem-cert-then-key": cert_pem + key_pem,
        "pem-key-then-cert": key_pem + cert_pem,
        "pem-cert-then-sec1-key": cert_pem + sec1,
        "pem-cert-then-encrypted-key": cert_pem + encrypted,
        "pem-cert-then-truncated-key": cert_pem + key_pem[:100],
        "pem-cert-then-openssh-key": cert_pem
        + b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        "pem-cert-then-der-key": cert_pem + key_der,
        "der-cert-then-der-key": cert_der + key_der,
    }


# -- private keys in certificate files ---------------------------------------------


BUNDLES = ["pem-cert-then-key", "pem-key-then-cert", "pem-cert-then-sec1-key",
           "pem-cert-then-encrypted-key", "pem-cert-then-truncated-key", "pem-cert-then-openssh-key",
           "pem-cert-then-der-key", "der-cert-then-der-key"]  # fmt: skip


def test_every_bundle_is_tested(ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert sorted(bundles(ec_key)) == sorted(BUNDLES)


@pytest.mark.parametrize("name", BUNDLES)
def test_a_certificate_file_carrying_a_key_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, name: str
) -> None:
    data = bundles(ec_key)[name]
    assert keys.holds_private_key(data)
    for kind in ("cert", "ca"):
        with pytest.raises(ContentError, match="holds a private key") as caught:
            validate_item(kind, data, source="combo.pem")  # type: ignore[arg-type]
        assert str(caught.value).startswith("combo.pem: ")
    info = describe_credential(data, source="combo.pem")
    assert info.holds_private_key


def test_plain_certificates_and_text_hold_no_key(
    ec_key: ec.EllipticCurvePrivateKey, raw: Path
) -> None:
    for data in (
        cert_for(ec_key),
        cert_for(ec_key, DER),
        cert_for(ec_key) * 3,
        b"notes\n" + cert_for(ec_key) + b"\nmore notes\n",
        (raw / "client_ca" / "client_ca_00.crt").read_bytes(),
        bytes(range(256)) * 64,
        b"\x30\x30" * 30000,
    ):
        assert not keys.holds_private_key(data)
        assert not describe_credential(data, source="c").holds_private_key


def test_a_pem_bundle_names_the_file_and_keeps_the_old_key_alone_message(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    with pytest.raises(ContentError, match="holds a private key; give the certificate alone"):
        validate_item("cert", cert_for(ec_key) + key_bytes(ec_key), source="combo.pem")
    # A key alone keeps its own message.
    with pytest.raises(ContentError, match="holds a private key, not a certificate"):
        validate_item("cert", key_bytes(ec_key, DER), source="k.der")


def test_inspect_warns_of_a_key_inside_a_certificate(ec_key: ec.EllipticCurvePrivateKey) -> None:
    data = cert_for(ec_key) + key_bytes(ec_key)
    report = inspect_bytes(data, source="combo.pem")
    assert report.items[0].info.kind == "certificate"
    assert any("also holds a private key" in w for w in report.warnings)
    in_bin = inspect_bytes(pki.build([("cert", data, None)]), source="combo.bin")
    assert any("also holds a private key" in w for w in in_bin.warnings)
    plain = inspect_bytes(cert_for(ec_key), source="c.pem")
    assert not plain.warnings


def test_a_ready_bin_with_a_key_in_a_cert_item_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    bundle = cert_for(ec_key) + key_bytes(ec_key)
    for partition in ("client_cert", "client_ca"):
        ca_bin = tmp_path / f"{partition}.bin"
        kind = "ca" if partition.endswith("_ca") else "cert"
        ca_bin.write_bytes(pki.build([(kind, cert_for(ec_key), None), (kind, bundle, None)]))
        with pytest.raises(ContentError, match=r"\[1\]: holds a private key"):
            build_plan(ESP32, [PartitionRequest(partition, (str(ca_bin),))])


# -- key types ---------------------------------------------------------------------------

UNUSABLE: dict[str, Callable[[], PrivateKeyTypes]] = {
    "Ed25519": ed25519.Ed25519PrivateKey.generate,
    "Ed448": ed448.Ed448PrivateKey.generate,
    "X25519": x25519.X25519PrivateKey.generate,
    "DSA": lambda: dsa.generate_private_key(2048),
}
USABLE: dict[str, Callable[[], PrivateKeyTypes]] = {
    "P-256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "P-384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "P-521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
    "brainpoolP256r1": lambda: ec.generate_private_key(ec.BrainpoolP256R1()),
    "RSA 1024": lambda: rsa.generate_private_key(65537, 1024),
    "RSA 2048": lambda: rsa.generate_private_key(65537, 2048),
}


@pytest.mark.parametrize("name", list(UNUSABLE))
def test_key_types_the_firmware_cannot_use_are_refused(name: str, tmp_path: Path) -> None:
    key = UNUSABLE[name]()
    data = key_bytes(key)
    with pytest.raises(ContentError, match="which ESP-AT cannot use") as caught:
        validate_item("key", data, source="odd.key")
    message = str(caught.value)
    assert message.startswith("odd.key: holds ")
    assert "P-256" in message and "P-384" in message and "RSA keys of 1024 to 4096 bits" in message
    assert "--no-key-type-check" in message
    validate_item("key", data, source="odd.key", key_type_check=False)
    path = tmp_path / "odd.key"
    path.write_bytes(data)
    request = [PartitionRequest("client_key", (str(path),))]
    with pytest.raises(ContentError, match="which ESP-AT cannot use"):
        build_plan(ESP32, request)
    plan = build_plan(ESP32, request, options=PlanOptions(key_type_check=False))
    assert plan.images[0].items[0][1] == data
    # A ready bin holding such a key is refused the same way.
    ready = tmp_path / "odd.bin"
    ready.write_bytes(pki.build([("key", data, None)]))
    with pytest.raises(ContentError, match=r"odd\.bin\[0\]: holds .* which ESP-AT cannot use"):
        build_plan(ESP32, [PartitionRequest("client_key", (str(ready),))])
    build_plan(
        ESP32,
        [PartitionRequest("client_key", (str(ready),))],
        options=PlanOptions(key_type_check=False),
    )


@pytest.mark.parametrize("name", list(USABLE))
def test_key_types_the_firmware_uses_pass(name: str) -> None:
    key = USABLE[name]()
    assert keys.firmware_key_problem(key) is None
    validate_item("key", key_bytes(key, DER), source="k.der")


def test_rsa_sizes_outside_what_the_chips_take(monkeypatch: pytest.MonkeyPatch) -> None:
    key = rsa.generate_private_key(65537, 2048)
    monkeypatch.setattr(keys, "RSA_KEY_BITS", (3072, 4096))
    assert keys.firmware_key_problem(key) == "an RSA key of 2048 bits"
    monkeypatch.setattr(keys, "RSA_KEY_BITS", (1024, 1536))
    assert keys.firmware_key_problem(key) == "an RSA key of 2048 bits"


def test_key_type_messages_name_the_type() -> None:
    assert keys.firmware_key_problem(ed25519.Ed25519PrivateKey.generate()) == "an Ed25519 key"
    assert keys.firmware_key_problem(x25519.X25519PrivateKey.generate()) == "an X25519 key"
    dsa_key = dsa.generate_private_key(1024)
    assert keys.firmware_key_problem(dsa_key) == "a DSA 1024 key"


def test_ec_curves_outside_the_firmwares_list_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # cryptography 44+ loads only curves mbedTLS has too: narrow the list to reach this branch.
    key = ec.generate_private_key(ec.SECP521R1())
    assert keys.firmware_key_problem(key) is None
    monkeypatch.setattr(keys, "EC_CURVES", {"secp256r1": "P-256"})
    assert keys.firmware_key_problem(key) == "an EC key on curve secp521r1"


def test_check_items_leaves_unreadable_content_to_the_firmware() -> None:
    # generate-bin and ready bins take files as they are; only positive findings refuse.
    check_items("key", [("junk", b"not a key at all")])
    check_items("cert", [("junk", b"not a certificate")])


# -- bounded reading ------------------------------------------------------------------


def test_read_bounded_reads_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100, "a thing") == b"x" * 100
    with pytest.raises(
        TooBigError, match=r"f\.txt: 100 bytes, a thing holds at most 99 bytes"
    ) as e:
        read_bounded(path, 99, "a thing")
    assert (e.value.size, e.value.limit) == (100, 99)


def test_read_bounded_refuses_a_huge_file_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "sparse.bin"
    with path.open("wb") as handle:
        handle.truncate(8 * 1024**3)  # 8 GiB, sparse: reading it would take minutes
    with pytest.raises(TooBigError, match="8589934592 bytes"):
        read_bounded(path, 1024, "a bench file")


def test_read_bounded_names_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(FileInputError, match="nope: file not found"):
        read_bounded(tmp_path / "nope", 10, "x")
    with pytest.raises(FileInputError, match="is a directory"):
        read_bounded(tmp_path, 10, "x")
    with pytest.raises(FileInputError, match="file not found"):
        read_bounded(tmp_path / "a\0b", 10, "x")


def _within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; fail the test if it has not returned in ``seconds``."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read blocked"
    return outcome[0]


@needs_posix
def test_a_fifo_without_a_writer_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.crt"
    os.mkfifo(fifo)
    error = _within(5, lambda: read_bounded(fifo, 100, "x"))
    assert isinstance(error, FileInputError)
    assert "pipe.crt: is a pipe (FIFO), not a regular file" in str(error)
    error = _within(5, lambda: pki.read_input(fifo))
    assert isinstance(error, FileInputError)


@needs_posix
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_devices_are_refused(device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device}")
    with pytest.raises(FileInputError, match=f"{device}: is a character device"):
        read_bounded(device, 100, "x")


@needs_posix
def test_a_file_swapped_for_a_fifo_after_stat_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.crt"
    path.write_bytes(b"x")
    real_open = os.open

    def swap_then_open(name: object, flags: int, *args: object) -> int:
        path.unlink()
        os.mkfifo(path)
        return real_open(name, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", swap_then_open)
    error = _within(5, lambda: read_bounded(path, 100, "x"))
    assert isinstance(error, FileInputError) and "not a regular file" in str(error)


# -- manifests ----------------------------------------------------------------------------


def test_a_manifest_row_with_fewer_cells_than_the_header_is_refused(raw: Path) -> None:
    cert = raw / "client_cert" / "client_cert_00.crt"
    key = raw / "client_key" / "client_key_00.key"
    text = f"mac,client_cert,client_key\n24:0a:c4:00:00:01,{cert},{key}\n24:0a:c4:00:00:02,{cert}\n"
    with pytest.raises(
        ManifestError, match=r"devices\.csv:3: 2 cells but the header has 3 columns"
    ):
        parse_manifest(text, source="devices.csv", base=raw)
    # An empty last cell is an explicit "leave this partition alone".
    ok = parse_manifest(text.rstrip("\n") + ",\n", source="devices.csv", base=raw)
    assert [r.partition for r in ok.rows[1].requests] == ["client_cert"]


# -- outputs never over inputs ------------------------------------------------------------


def test_write_outputs_refuses_to_overwrite_an_input(tmp_path: Path) -> None:
    source = tmp_path / "my.key"
    source.write_bytes(b"secret")
    other = tmp_path / "other.bin"
    link = tmp_path / "link.key"
    link.symlink_to(source)
    hard = tmp_path / "hard.key"
    os.link(source, hard)
    for target in (source, link, hard, tmp_path / "." / "my.key"):
        with pytest.raises(FileInputError, match="is also an input of this command"):
            write_outputs({other: b"a", target: b"b"}, inputs=[str(source)])
        assert source.read_bytes() == b"secret"
        assert not other.exists(), "nothing may be written when one output is refused"
    write_outputs({other: b"a"}, inputs=[str(source), str(tmp_path / "absent")])
    assert other.read_bytes() == b"a"


def test_private_outputs_are_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "k.bin"
    write_outputs({target: b"k"}, private=lambda _p: True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # A backup written while restoring that very backup must not replace it.
    with pytest.raises(FileInputError, match="is also an input"):
        write_private(target, b"new", inputs=[target])
    assert target.read_bytes() == b"k"


# -- mock board MACs ---------------------------------------------------------------------


def test_parse_mac_takes_the_usual_forms() -> None:
    for text in ("02:0A:C4:00:00:01", "02-0a-c4-00-00-01", "020ac4000001", " 02:0a:c4:00:00:01 "):
        assert parse_mac(text) == "02:0a:c4:00:00:01"


@pytest.mark.parametrize(
    "text", ["zz", "02:0a:c4:00:00", "02:0a:c4:00:00:01:02", "02:0a-c4:00:00:01", "03:00:00:00:00:01",
             "00:00:00:00:00:00", ""],
)  # fmt: skip
def test_parse_mac_refuses_what_no_board_has(text: str) -> None:
    with pytest.raises(Exception, match="MAC") as caught:
        parse_mac(text)
    assert "\n" not in str(caught.value)


def test_distinct_macs_are_locally_administered_unicast() -> None:
    macs = {distinct_mac() for _ in range(50)}
    for mac in macs:
        assert parse_mac(mac) == mac
        first = int(mac[:2], 16)
        assert first & 0b10 and not first & 0b01
        assert mac.endswith(f"{os.getpid() & 0xFFFFFF:06x}"[-2:])
