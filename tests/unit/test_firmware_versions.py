"""Which ESP-AT release reads which mfg_nvs namespace, and AT+GMR's version number."""

from __future__ import annotations

import pytest

from atflash.backends.at.reply import parse_at_version
from atflash.content.mfgnvs import CREDENTIAL_NAMESPACES, first_read, unread_by, version_warning


@pytest.mark.parametrize(
    ("lines", "version"),
    [
        (["AT version:3.2.0.0(s-ec2dec2 - ESP32 - Jul 28 2023 07:05:28)"], (3, 2, 0, 0)),
        (["noise", "AT version:v4.1.0.0-dev(abc - ESP32C3 - Jan 1 2025)"], (4, 1, 0, 0)),
        (["AT version:1.1.0.0(May 11 2016 18:09:56)"], (1, 1, 0, 0)),
        (["Bin version:v4.1.0.0(MINI-1)"], None),
        (["AT version:unknown"], None),
    ],
)
def test_the_version_number_of_at_gmr(lines: list[str], version: tuple[int, ...] | None) -> None:
    assert parse_at_version(lines) == version


def test_https_and_wss_from_4_1_wpa_ent_only_after_5_0_1() -> None:
    late = {ns for ns in CREDENTIAL_NAMESPACES if first_read(ns) is not None}
    assert late == {f"{p}_{k}" for p in ("https", "wss", "wpa_ent") for k in ("cert", "key", "ca")}
    names = ["client_cert", "https_cert", "wss_key", "wpa_ent_ca", "wpa2_ca"]
    assert [n for n, _f in unread_by((3, 2, 0, 0), names)] == [
        "https_cert",
        "wss_key",
        "wpa_ent_ca",
    ]
    assert [n for n, _f in unread_by((4, 0, 0, 0), names)] == [
        "https_cert",
        "wss_key",
        "wpa_ent_ca",
    ]
    assert [n for n, _f in unread_by((4, 1, 0, 0), names)] == ["wpa_ent_ca"]
    assert [n for n, _f in unread_by((5, 0, 1, 0), names)] == ["wpa_ent_ca"]
    assert unread_by((5, 1, 0, 0), names) == []


def test_one_warning_names_the_first_version_for_each() -> None:
    assert version_warning(["client_cert", "mqtt_ca"]) is None
    line = version_warning(["https_cert", "client_ca", "wss_ca"])
    assert line is not None and "\n" not in line
    assert line.startswith("firmware reads https_cert, wss_ca only from v4.1.0.0")
