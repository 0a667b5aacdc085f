"""Private keys stay private: not in output, errors, reprs, events or results; key files 0600.

A "secret window" is any 16 bytes of a key file's base64 body or of its DER
that the matching certificate does not also hold (the public half of a key
is in its certificate and is no secret). Every text a user or a log could
see is searched for each window, raw and in hex.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import Result
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from atflash.backends.base import new_result, write_board
from atflash.backends.esptool.backend import EsptoolBackend
from atflash.backends.esptool.options import ConnectOptions
from atflash.content import pki
from atflash.content.certs import load_certificate
from atflash.content.checks import check_items, validate_item
from atflash.content.describe import ItemInfo, describe_credential, inspect_bytes
from atflash.content.keys import check_no_private_key, load_private_key
from atflash.content.pairing import check_pairs
from atflash.content.secret import is_secret
from atflash.errors import EXIT_USER_ERROR, AtflashError
from atflash.events import Event
from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, build_plan
from tests.support.cli import run
from tools.certs import DER, PEM, certificate, key_bytes

PROFILE = find_profile("esp32")
NOW = datetime.now(timezone.utc)


@dataclass(frozen=True)
class Material:
    """One key and its certificate, as files on disk."""

    key_pem: bytes
    key_der: bytes
    cert_pem: bytes
    folder: Path

    @property
    def windows(self) -> set[bytes]:
        cert_der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(DER)
        public = {cert_der, _pem_body(self.cert_pem)}
        found = _windows(_pem_body(self.key_pem)) | _windows(self.key_der)
        return {w for w in found if not any(w in p for p in public)}

    def path(self, name: str) -> str:
        return str(self.folder / name)


def _pem_body(pem: bytes) -> bytes:
    lines = pem.splitlines()
    return b"".join(ln for ln in lines if ln and not ln.startswith(b"-----") and b":" not in ln)


def _windows(data: bytes) -> set[bytes]:
    return {data[i : i + 16] for i in range(len(data) - 15)}


def _make(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, folder: Path) -> Material:
    cert = certificate(key, common_name="device 7", serial=7)
    key_pem, key_der = key_bytes(key), key_bytes(key, DER)
    cert_pem = cert.public_bytes(PEM)
    other = ec.generate_private_key(ec.SECP256R1())
    files = {
        "key.pem": key_pem,
        "key.der": key_der,
        "cert.pem": cert_pem,
        "key.bin": pki.build([("key", key_pem, None)]),
        "key_dump.bin": pki.pad(pki.build([("key", key_der, None), ("key", key_pem, None)]), 0x2000),
        # A damaged key: its middle replaced, so no loader accepts it.
        "damaged.key": key_pem[:80] + b"!!!!" + key_pem[84:],
        "truncated.key": key_pem[: len(key_pem) // 2],
        "key_and_junk.pem": b"notes\n" + key_pem + b"\x00\x01garbage",
        "other_cert.pem": certificate(other, common_name="other", serial=8).public_bytes(PEM),
        # The certificate with its key along: refused for certificate partitions.
        "bundle.pem": cert_pem + key_pem,
        "bundle_der.crt": cert.public_bytes(DER) + key_der,
        "bundle.bin": pki.build([("cert", cert_pem + key_pem, None)]),
    }  # fmt: skip
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    return Material(key_pem, key_der, cert_pem, folder)


@pytest.fixture(scope="module", params=["ec", "rsa"])
def material(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Material:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if request.param == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _make(key, tmp_path_factory.mktemp(f"secret-{request.param}"))


def assert_clean(texts: Iterable[str | bytes], material: Material) -> None:
    """No secret window, raw or as hex, in any of ``texts``."""
    windows = material.windows
    assert len(windows) > 20, "the key has too few secret windows to test with"
    for text in texts:
        raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
        lowered = raw.lower()
        leaked = [w for w in windows if w in raw or w.hex().encode() in lowered]
        assert not leaked, f"key material in {raw[:200]!r}..."


# -- commands ------------------------------------------------------------------------------


def outputs(result: Result) -> list[bytes]:
    return [result.stdout_bytes, result.stderr_bytes or b""]


INSPECTED = ["key.pem", "key.der", "key.bin", "key_dump.bin", "damaged.key", "truncated.key",
             "key_and_junk.pem", "bundle.pem", "bundle_der.crt", "bundle.bin"]  # fmt: skip
MALFORMED = {"damaged.key", "truncated.key"}  # refused by inspect: the error line is checked too


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
@pytest.mark.parametrize("name", INSPECTED)
def test_inspect_never_prints_a_key(material: Material, name: str, json_flag: list[str]) -> None:
    result = run("inspect", *json_flag, material.path(name))
    if name in MALFORMED:
        assert result.exit_code == EXIT_USER_ERROR, result.output
        assert "damaged" in result.stderr and len(result.stderr.splitlines()) == 1
    else:
        assert result.exit_code == 0, result.output
        assert result.stdout.strip()
    assert_clean(outputs(result), material)
    if json_flag:
        for report in json.loads(result.stdout):
            for item in report.get("items", []):
                assert set(item["info"]) == set(ItemInfo.__dataclass_fields__)


def test_inspect_names_what_it_hides(material: Material) -> None:
    result = run("inspect", material.path("key.pem"))
    assert "private key" in result.stdout
    assert "not encrypted" in result.stdout


def test_build_and_generate_bin_output(material: Material, tmp_path: Path) -> None:
    out = tmp_path / "out"
    built = run("build", "--chip", "esp32", "-o", str(out),
                "client_cert", material.path("cert.pem"), "client_key", material.path("key.pem"))  # fmt: skip
    assert built.exit_code == 0, built.output
    generated = run(
        "generate-bin", "-b", str(tmp_path / "PKI.bin"), "key", material.path("key.der")
    )
    assert generated.exit_code == 0, generated.output
    assert_clean([*outputs(built), *outputs(generated)], material)


def test_build_writes_key_images_owner_only(material: Material, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("build", "--chip", "esp32", "-o", str(out),
                 "client_cert", material.path("cert.pem"), "client_key", material.path("key.pem"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((out / "client_key.bin").stat().st_mode) == 0o600
    # Certificates are public: only key images are restricted.
    assert stat.S_IMODE((out / "client_cert.bin").stat().st_mode) & 0o044


def test_parse_bin_writes_keys_owner_only(material: Material, tmp_path: Path) -> None:
    result = run("parse-bin", "-b", material.path("key_dump.bin"), "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert_clean(outputs(result), material)
    keys = sorted(tmp_path.glob("key_*.key"))
    assert [k.name for k in keys] == ["key_00.key", "key_01.key"]
    assert keys[0].read_bytes() == material.key_der
    assert keys[1].read_bytes() == material.key_pem
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


ERROR_COMMANDS = [
    ("key-in-cert-partition", ["build", "--chip", "esp32", "-o", "{out}", "client_cert", "{key.pem}"]),
    ("der-key-in-ca-partition", ["build", "--chip", "esp32", "-o", "{out}", "client_ca", "{key.der}"]),
    ("damaged-key", ["build", "--chip", "esp32", "-o", "{out}", "client_key", "{damaged.key}"]),
    ("truncated-key", ["build", "--chip", "esp32", "-o", "{out}", "client_key", "{truncated.key}"]),
    ("pair-mismatch", ["build", "--chip", "esp32", "-o", "{out}", "client_cert", "{other_cert.pem}", "client_key", "{key.pem}"]),
    ("too-big", ["build", "--chip", "esp32", "-o", "{out}", "client_key", *["{key_and_junk.pem}"] * 35]),
    ("key-bin-in-cert-partition", ["build", "--chip", "esp32", "-o", "{out}", "client_cert", "{key.bin}"]),
    ("generate-odd-pairs", ["generate-bin", "-b", "{out}", "key", "{key.pem}", "cert"]),
    ("parse-bin-of-a-key", ["parse-bin", "-b", "{key.pem}", "-o", "{out}"]),
    ("write-no-port", ["write", "--chip", "esp32", "--port", "/dev/ttyNOPE0", "--before", "no-reset", "client_key", "{key.pem}"]),
    ("write-no-port-json", ["write", "--chip", "esp32", "--port", "/dev/ttyNOPE0", "--before", "no-reset", "--json", "client_key", "{key.pem}"]),
    ("write-pair-mismatch", ["write", "--chip", "esp32", "--port", "/dev/ttyNOPE0", "client_cert", "{other_cert.pem}", "client_key", "{key.der}"]),
    ("write-key-in-cert-partition", ["write", "--chip", "esp32", "--port", "/dev/ttyNOPE0", "client_cert", "{key_and_junk.pem}"]),
    ("verify-no-port", ["verify", "--chip", "esp32", "--port", "/dev/ttyNOPE0", "client_key", "{key.pem}"]),
    ("bundle-in-cert-partition", ["build", "--chip", "esp32", "-o", "{out}", "client_cert", "{bundle.pem}"]),
    ("der-bundle-in-ca-partition", ["build", "--chip", "esp32", "-o", "{out}", "client_ca", "{bundle_der.crt}"]),
    ("bundle-bin-in-cert-partition", ["build", "--chip", "esp32", "-o", "{out}", "client_cert", "{bundle.bin}"]),
    ("generate-bundle-as-cert", ["generate-bin", "-b", "{out}", "cert", "{bundle.pem}"]),
    ("generate-onto-its-own-key", ["generate-bin", "-b", "{key.pem}", "key", "{key.pem}"]),
    ("write-bundle-in-cert-partition", ["write", "--chip", "esp32", "--port", "/dev/ttyNOPE0", "client_cert", "{bundle.pem}"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "args", [a for _i, a in ERROR_COMMANDS], ids=[i for i, _a in ERROR_COMMANDS]
)
def test_errors_never_show_a_key(material: Material, args: list[str], tmp_path: Path) -> None:
    def place(arg: str) -> str:
        if arg == "{out}":
            return str(tmp_path / "out")
        if arg.startswith("{"):
            return material.path(arg.strip("{}"))
        return arg

    result = run(*map(place, args))
    assert result.exit_code != 0
    assert (result.stderr or result.stdout).strip()
    assert_clean(outputs(result), material)


# -- the library ---------------------------------------------------------------------------


def caught(call: object) -> AtflashError:
    try:
        call()  # type: ignore[operator]
    except AtflashError as exc:
        return exc
    raise AssertionError("no AtflashError raised")


def error_texts(error: AtflashError) -> list[str]:
    return [str(error), repr(error), error.message, error.hint or "", *map(str, error.args),
            *(repr(v) for v in vars(error).values())]  # fmt: skip


def test_library_errors_never_carry_a_key(material: Material) -> None:
    key, der = material.key_pem, material.key_der
    other = (material.folder / "other_cert.pem").read_bytes()
    bundle = (material.folder / "bundle.pem").read_bytes()
    bundle_der = (material.folder / "bundle_der.crt").read_bytes()
    errors = [
        caught(lambda: load_certificate(key, source="k.pem")),
        caught(lambda: load_certificate(der, source="k.der")),
        caught(lambda: validate_item("ca", key, source="k.pem")),
        caught(lambda: validate_item("cert", bundle, source="b.pem")),
        caught(lambda: validate_item("ca", bundle_der, source="b.crt")),
        caught(lambda: check_no_private_key(bundle, source="b.pem")),
        caught(lambda: check_items("cert", [("b.bin[0]", bundle)])),
        caught(
            lambda: build_plan(
                PROFILE, [PartitionRequest("client_ca", (material.path("bundle.bin"),))]
            )
        ),
        caught(lambda: load_private_key(key[:-60], source="t.pem")),
        caught(lambda: load_private_key(der[:-9], source="t.der")),
        caught(lambda: check_pairs([("c", other)], [("k", key)])),
        caught(lambda: pki.parse(pki.build([("key", key, None)])[:-40], source="cut.bin")),
        caught(lambda: pki.parse(b"\xf1\xf1\x01\x00\xff\x00\x00\x00" + key, source="x.bin")),
        caught(
            lambda: build_plan(
                PROFILE, [PartitionRequest("client_cert", (material.path("key.pem"),))]
            )
        ),
        caught(
            lambda: build_plan(
                PROFILE,
                [
                    PartitionRequest("client_cert", (material.path("other_cert.pem"),)),
                    PartitionRequest("client_key", (material.path("key.pem"),)),
                ],
            )
        ),
    ]
    for error in errors:
        assert error.__cause__ is None
        assert_clean(error_texts(error), material)


def test_reprs_never_carry_a_key(material: Material) -> None:
    built = pki.arrange([("key", material.key_pem, "k.pem"), ("key", material.key_der, None)])
    plan = build_plan(
        PROFILE,
        [
            PartitionRequest("client_cert", (material.path("cert.pem"),)),
            PartitionRequest("client_key", (material.path("key.pem"), material.path("key.der"))),
        ],
    )
    report = inspect_bytes((material.folder / "key_dump.bin").read_bytes(), source="dump", now=NOW)
    texts = [repr(built), str(built), *map(repr, built.items), repr(plan), str(plan),
             *map(repr, plan.images), repr(report), json.dumps(report.to_json()),
             repr(describe_credential(material.key_pem, source="k"))]  # fmt: skip
    assert_clean(texts, material)
    # The data is still there for those who need it: only its display is hidden.
    assert plan.images[1].items[0][1] == material.key_pem


def test_events_and_board_result_never_carry_a_key(material: Material) -> None:
    plan = build_plan(PROFILE, [PartitionRequest("client_key", (material.path("key.pem"),))])
    events: list[Event] = []
    result = write_board(
        EsptoolBackend(),
        ConnectOptions(port="/dev/ttyNOPE0", before="no-reset"),
        [plan],
        events=events.append,
    )
    assert not result.ok
    assert events
    fresh = new_result("/dev/ttyNOPE0", plan)
    texts = [json.dumps(e.to_dict()) for e in events] + [repr(e) for e in events]
    texts += [json.dumps(result.to_json()), repr(result), json.dumps(fresh.to_json()), repr(fresh)]
    assert_clean(texts, material)


def test_bundles_extracted_by_parse_bin_are_owner_only(material: Material, tmp_path: Path) -> None:
    result = run("parse-bin", "-b", material.path("bundle.bin"), "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert_clean(outputs(result), material)
    assert stat.S_IMODE((tmp_path / "cert_00.crt").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("kind", "names", "secret"),
    [
        ("key", [], True),  # a key slot is secret whatever it holds
        ("cert", ["cert.pem"], False),
        ("ca", ["other_cert.pem", "cert.pem"], False),
        (None, ["cert.pem"], False),
        ("cert", ["cert.pem", "bundle.pem"], True),  # a key along with a certificate
        ("cert", ["bundle_der.crt"], True),
        (None, ["key_and_junk.pem"], True),
        (None, ["truncated.key"], True),  # unreadable, but key material all the same
    ],
)
def test_is_secret_is_the_one_rule_for_0600(
    material: Material, kind: str | None, names: list[str], secret: bool
) -> None:
    contents = [(material.folder / name).read_bytes() for name in names]
    assert is_secret(kind, contents) is secret


def test_key_type_errors_never_show_the_key(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem, der = key_bytes(key), key_bytes(key, DER)
    (tmp_path / "ed.key").write_bytes(pem)
    (tmp_path / "ed.bin").write_bytes(pki.build([("key", pem, None)]))
    windows = _windows(_pem_body(pem)) | _windows(der[16:])  # past the PKCS#8 header
    texts: list[str | bytes] = []
    for args in (["build", "--chip", "esp32", "-o", str(tmp_path / "o"), "client_key", str(tmp_path / "ed.key")],
                 ["build", "--chip", "esp32", "-o", str(tmp_path / "o"), "client_key", str(tmp_path / "ed.bin")],
                 ["generate-bin", "-b", str(tmp_path / "o.bin"), "key", str(tmp_path / "ed.key")]):  # fmt: skip
        result = run(*args)
        assert result.exit_code == 2 and "Ed25519" in result.stderr
        texts += outputs(result)
    error = caught(lambda: validate_item("key", pem, source="ed.key"))
    texts += error_texts(error)
    for text in texts:
        raw = text if isinstance(text, bytes) else text.encode()
        assert not [w for w in windows if w in raw or w.hex().encode() in raw.lower()]
