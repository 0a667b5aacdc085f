"""Credentials given as bytes (files.Blob) go through the very checks files do.

The same content planned from a file and from a Blob gives the same
images, and the same refusal, word for word but for the name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atflash.errors import InputError
from atflash.files import Blob
from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, WritePlan, build_plan
from tests.support.samples import RAW

PARTITIONS = sorted(p.name for p in RAW.iterdir())


def plan_of(profile: str, requests: list[PartitionRequest]) -> WritePlan:
    return build_plan(find_profile(profile), requests)


def as_blobs(request: PartitionRequest) -> PartitionRequest:
    blobs = tuple(Blob(f"<bytes {i}>", Path(f).read_bytes()) for i, f in enumerate(request.files))
    return PartitionRequest(request.partition, blobs)


@pytest.mark.parametrize("profile", ["esp32", "esp32c3-3x"])
def test_files_and_bytes_make_the_same_images(profile: str) -> None:
    files = [
        PartitionRequest(name, tuple(str(f) for f in sorted((RAW / name).iterdir())))
        for name in PARTITIONS
    ]
    from_files = plan_of(profile, files)
    from_bytes = plan_of(profile, [as_blobs(r) for r in files])
    assert [(i.bin, i.values, i.items and [c for _n, c in i.items]) for i in from_files.images] == [
        (i.bin, i.values, i.items and [c for _n, c in i.items]) for i in from_bytes.images
    ]
    count = len(from_bytes.images[0].sources)
    assert from_bytes.images[0].sources == tuple(f"<bytes {i}>" for i in range(count))


@pytest.mark.parametrize(
    ("partition", "content"),
    [
        ("client_cert", b"not a certificate"),
        ("client_key", (RAW / "client_cert" / "client_cert_00.crt").read_bytes()),
        ("client_cert", b""),
        ("client_cert", b"x" * 70000),
        ("client_ca", (RAW / "client_key" / "client_key_00.key").read_bytes()),
    ],
)
def test_files_and_bytes_are_refused_alike(tmp_path, partition: str, content: bytes) -> None:
    path = tmp_path / "given"
    path.write_bytes(content)
    refusals = []
    for source in (str(path), Blob("<bytes given>", content)):
        with pytest.raises(InputError) as refused:
            plan_of("esp32", [PartitionRequest(partition, (source,))])
        refusals.append((type(refused.value), str(refused.value).replace(str(source), "NAME")))
    (file_type, file_text), (blob_type, blob_text) = refusals
    assert file_type is blob_type
    assert blob_text == file_text.replace(
        "NAME: file is empty: a credential file must hold", "NAME: is empty: a credential holds"
    )


def test_a_blob_never_shows_its_bytes() -> None:
    secret = (RAW / "client_key" / "client_key_00.key").read_bytes()
    blob = Blob("<bytes client_key[0]>", secret)
    plan = plan_of("esp32", [PartitionRequest("client_key", (blob,))])
    body = secret.split(b"\n")[1].decode()
    assert body not in repr(blob) and body not in repr(plan)
    assert str(blob) == "<bytes client_key[0]>"
