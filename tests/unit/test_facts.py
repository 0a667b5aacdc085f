"""What a planned image is said to hold: each item's public facts, never key bytes."""

from __future__ import annotations

import json
from pathlib import Path

from atflash.content import pki
from atflash.content.certs import load_certificate
from atflash.layout.profiles import find_profile
from atflash.planning.facts import describe_image
from atflash.planning.plan import PartitionRequest, build_plan
from tests.support.samples import pairs_plan


def test_each_item_is_named_by_type_id_and_public_facts(raw: Path) -> None:
    cert_image, key_image = pairs_plan().images
    certs = describe_image(cert_image)
    assert [(c["type"], c["id"], c["kind"]) for c in certs] == [
        ("cert", 0, "certificate"),
        ("cert", 1, "certificate"),
    ]
    first = certs[0]
    cert_file = raw / "client_cert" / "client_cert_00.crt"
    assert first["source"] == str(cert_file)
    loaded = load_certificate(cert_file.read_bytes(), source="x")
    assert first["serial"] == f"{loaded.serial_number:x}"
    assert first["not_after"] == loaded.not_valid_after_utc.isoformat()
    assert first["subject"] == loaded.subject.rfc4514_string()
    assert len(first["sha256"]) == 64
    keys = describe_image(key_image)
    assert [(k["type"], k["id"], k["kind"]) for k in keys] == [
        ("key", 0, "private key"),
        ("key", 1, "private key"),
    ]
    # A key is known by its public half only, the same fingerprint as its certificate's.
    assert keys[0]["public_key_sha256"] == first["public_key_sha256"]
    assert set(keys[0]) == {"type", "id", "source", "kind", "size", "key_type", "encrypted",
                            "public_key_sha256"}  # fmt: skip
    key_text = (raw / "client_key" / "client_key_00.key").read_text()
    dumped = json.dumps(keys)
    for line in key_text.splitlines()[1:-1]:
        assert line not in dumped


def test_a_ready_bin_and_a_blank_image_are_described_from_their_bytes(
    raw: Path, tmp_path: Path
) -> None:
    ready = tmp_path / "ca.bin"
    cas = sorted((raw / "client_ca").iterdir())
    ready.write_bytes(pki.build(("ca", f.read_bytes(), None) for f in cas))
    blank = tmp_path / "blank.bin"
    blank.write_bytes(b"\xff" * 0x2000)
    plan = build_plan(
        find_profile("esp32"),
        [
            PartitionRequest("client_ca", (str(ready),)),
            PartitionRequest("server_ca", (str(blank),)),
        ],
    )
    described = describe_image(plan.images[0])
    assert [(d["type"], d["id"], d["source"]) for d in described] == [
        ("ca", 0, f"{ready}[0]"),
        ("ca", 1, f"{ready}[1]"),
    ]
    assert describe_image(plan.images[1]) == []


def test_an_mfg_nvs_namespace_is_described_value_by_value(raw: Path) -> None:
    plan = build_plan(
        find_profile("esp32-3x"),
        [PartitionRequest("client_cert", (str(raw / "client_cert" / "client_cert_00.crt"),))],
    )
    (item,) = describe_image(plan.images[0])
    assert (item["type"], item["id"], item["kind"]) == ("cert", 0, "certificate")


def test_an_image_sent_to_a_worker_carries_its_facts(monkeypatch) -> None:
    """Made where the plan was built: a worker never parses and checks every key again for them."""
    import pickle

    from atflash.backends.base import new_result
    from atflash.planning import facts

    plan = pairs_plan()
    sent = pickle.loads(pickle.dumps(plan))

    def not_again(_image):  # pragma: no cover - only runs if the facts did not travel
        raise AssertionError("described again in the worker")

    monkeypatch.setattr(facts, "describe_image", not_again)
    result = new_result("/dev/ttyUSB0", sent)
    assert [p.items for p in result.partitions] == [list(i.facts) for i in plan.images]
    assert result.partitions[1].items[0]["kind"] == "private key"
