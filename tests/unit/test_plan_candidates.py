"""Planning against several candidate layouts: only what fits none is refused before a board."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from atflash.errors import ImageTooBigError
from atflash.layout.profiles import family, find_profile
from atflash.planning.plan import PartitionRequest, build_plans


def chain(raw: Path, tmp_path: Path) -> str:
    certs = [(raw / "client_ca" / f"client_ca_0{n % 2}.crt").read_bytes() for n in range(8)]
    path = tmp_path / "chain.pem"
    path.write_bytes(b"".join(certs))
    return str(path)


def test_a_request_too_big_for_the_usual_layout_is_planned_for_the_others(
    raw: Path, tmp_path: Path
) -> None:
    request = [PartitionRequest("client_ca", (chain(raw, tmp_path),))]
    plans = build_plans(family("esp32c3"), request)
    assert {p.profile.store for p in plans} == {"mfg_nvs"}
    c3 = find_profile("esp32c3")
    why = plans[0].refusal(c3)
    assert why is not None and "client_ca: image is" in why and "bytes too many" in why
    assert plans[0].refusal(plans[0].profile) is None
    # Plans go to batch workers: the reasons travel as text.
    assert pickle.loads(pickle.dumps(plans[0])).refusal(c3) == why


def test_a_request_no_candidate_can_take_is_refused_with_the_first_ones_reason(
    raw: Path, tmp_path: Path
) -> None:
    request = [PartitionRequest("client_ca", (chain(raw, tmp_path),))]
    pki_layouts = [p for p in family("esp32c3") if p.store == "pki"]
    with pytest.raises(ImageTooBigError, match="client_ca: image is"):
        build_plans(pki_layouts, request)
