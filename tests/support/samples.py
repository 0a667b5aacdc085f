"""Espressif's sample credentials from ESP-AT 2.4 (tests/fixtures/esp-at-raw-data), by path."""

from __future__ import annotations

from pathlib import Path

from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, WritePlan, build_plan

RAW = Path(__file__).resolve().parent.parent / "fixtures" / "esp-at-raw-data"
CERTS = (RAW / "client_cert" / "client_cert_00.crt", RAW / "client_cert" / "client_cert_01.crt")
KEYS = (RAW / "client_key" / "client_key_00.key", RAW / "client_key" / "client_key_01.key")
CAS = (RAW / "client_ca" / "client_ca_00.crt", RAW / "client_ca" / "client_ca_01.crt")
# One file per role: set 00's certificate, key and CA, set 01's certificate and key, an MQTT one.
SAMPLE = {
    "cert": CERTS[0],
    "key": KEYS[0],
    "ca": CAS[0],
    "cert1": CERTS[1],
    "key1": KEYS[1],
    "mqtt_cert": RAW / "mqtt_cert" / "mqtt_client.crt",
}


def pairs_plan(profile: str = "esp32") -> WritePlan:
    """The two sample certificates and their keys, planned for one built-in layout."""
    return build_plan(
        find_profile(profile),
        [
            PartitionRequest("client_cert", tuple(str(c) for c in CERTS)),
            PartitionRequest("client_key", tuple(str(k) for k in KEYS)),
        ],
    )
