"""The station's page: the token, and the page itself in a real headless Chromium.

The browser test runs a station with four slots (one watched from working
to ok, a dead board, a board plugged in again, an empty slot) and a line of
two stations on a PostgreSQL ledger, reads what the page shows from its DOM
and takes the screenshots kept in docs/ (written there when
``ATFLASH_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import os
import struct
import threading
import urllib.error
import urllib.request
from pathlib import Path

import atflash
from atflash.run.workers import StopRequest
from atflash.station.line import LineWatch
from atflash.station.web import page, serve
from tools.station import SlotRig, mac_of, wait_for

RAW = Path(__file__).parent.parent / "fixtures" / "esp-at-raw-data"
DOCS = Path(__file__).parent.parent.parent / "docs"
FAST = atflash.StationOptions(poll=0.05, gone_after=0.2, probe_interval=0.2, stop_grace=5)


def _plan() -> atflash.Plan:
    return atflash.plan(
        {"client_ca": (RAW / "client_ca" / "client_ca_00.crt").read_bytes()}, chip="esp32"
    )


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_non_local_page_needs_its_token() -> None:
    station = atflash.Station(["socket://127.0.0.1:9"], _plan(), name="t")
    server = serve(station, "0.0.0.0", 0, token="s3cret")
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert _get(f"{base}/") == 401
        assert _get(f"{base}/api/state") == 401
        assert _get(f"{base}/events") == 401
        assert _get(f"{base}/api/state", {"Authorization": "Bearer wrong"}) == 401
        assert _get(f"{base}/?token=wrong") == 401
        assert _get(f"{base}/", {"Authorization": "Bearer s3cret"}) == 200
        assert _get(f"{base}/api/state?token=s3cret") == 200
        # Read-only: there is nothing to post to.
        assert _get(f"{base}/api/state", {"Authorization": "Bearer s3cret"}, "POST") == 405
    finally:
        server.close()


def test_a_local_page_needs_no_token_and_fetches_nothing_from_elsewhere() -> None:
    station = atflash.Station(["socket://127.0.0.1:9"], _plan(), name="t")
    server = serve(station, "127.0.0.1", 0, token=None)
    try:
        assert _get(server.url) == 200
    finally:
        server.close()
    html = page()
    for external in ('src="http', "src='http", 'href="http', "url(http", "@import"):
        assert external not in html


def _text(browser, selector: str) -> str | None:
    """What an element shows now, read in one step (the page replaces its elements on updates)."""
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null", selector
    )


def _count(browser, selector: str) -> int:
    return browser.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def _png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def _shoot(browser, width: int, height: int, path: Path) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    browser.save_screenshot(str(path))
    assert _png_size(path) == (width, height)
    if os.environ.get("ATFLASH_UPDATE_SCREENSHOTS") == "1":
        (DOCS / path.name).write_bytes(path.read_bytes())


_WATCH = """
window.__states = [];
const look = () => {
  const tile = document.querySelector('.slot[data-slot="1"]');
  const state = tile && tile.dataset.state;
  if (state && window.__states[window.__states.length - 1] !== state) window.__states.push(state);
};
new MutationObserver(look).observe(document.getElementById('slots'),
                                   {childList: true, subtree: true, attributes: true});
look();
"""


def test_the_page_shows_a_slot_go_from_working_to_ok(
    browser, postgres_server, tmp_path: Path
) -> None:
    from atflash.factory.ledger import open_ledger

    rigs = [SlotRig() for _ in range(4)]
    release = threading.Event()
    plan = _plan()

    def plan_for(identity: atflash.BoardIdentity) -> atflash.Plan:
        if identity.port == rigs[0].url:  # slot 1 waits until the page has shown it working
            assert release.wait(60)
        return plan

    station = atflash.Station(
        [rig.url for rig in rigs], plan_for, name="line-1 bench-3", log=tmp_path / "station.log",
        options=FAST, link={"connect_attempts": 1},
    )  # fmt: skip
    ledger = postgres_server.create_database("station_line")
    held = open_ledger(ledger)  # another station on the line failed a board
    held.record(held.claim(device="02:5e:00:00:99:01", station="line-1 bench-4", sets=["0001"]),
                result="failed", image_sha256={})  # fmt: skip
    held.close()
    other = atflash.Station(["socket://127.0.0.1:9"], plan, name="line-1 bench-4")
    closing = threading.Event()
    watches = [LineWatch(s, ledger, closing, beat=0.3) for s in (station, other)]
    stop = StopRequest()
    runner = threading.Thread(target=station.run, args=(stop,), daemon=True)
    runner.start()
    server = serve(station, "127.0.0.1", 0, token="t0k")
    try:
        for watch in watches:
            watch.start()

        def state(slot: str) -> str:
            return next(s["state"] for s in station.snapshot()["slots"] if s["name"] == slot)

        # Slot 2: a dead board. Slot 3: a board written, pulled and plugged in again.
        rigs[1].plug_dead()
        wait_for(lambda: state("2") == "failed", "slot 2 failed")
        rigs[2].plug(mac_of(301))
        wait_for(lambda: state("3") == "ok", "slot 3 ok")
        rigs[2].unplug()
        wait_for(lambda: state("3") == "empty", "slot 3 empty")
        rigs[2].plug(mac_of(301))
        wait_for(lambda: state("3") == "remove", "slot 3 remove")

        browser.get(f"{server.url}?token=t0k")
        wait_for(lambda: _text(browser, "#link") == "LIVE", "the page to go live")
        assert "token" not in browser.current_url  # kept by the page, off the address bar
        browser.execute_script(_WATCH)
        rigs[0].plug(mac_of(101))
        wait_for(
            lambda: browser.execute_script("return window.__states").count("working"),
            "slot 1 working on the page",
        )
        release.set()
        wait_for(lambda: browser.execute_script("return window.__states")[-1] == "ok", "slot 1 ok")
        states = browser.execute_script("return window.__states")
        assert states.index("working") < states.index("ok")

        text = {k: _text(browser, f"#count-{k}") for k in ("total", "ok", "failed", "yield")}
        assert text == {"total": "3", "ok": "2", "failed": "1", "yield": "66.7%"}
        attention = _text(browser, "#attention")
        assert "Slot 2 FAILED" in attention and "did not answer" in attention
        assert "Slot 3 REMOVE" in attention and "already provisioned" in attention
        tile = _text(browser, '.slot[data-slot="1"]')
        assert "OK" in tile and mac_of(101) in tile
        assert _count(browser, "#events tbody tr") == 4
        assert "OK" in _text(browser, "#events tbody tr")
        wait_for(
            lambda: "line-1 bench-4" in _text(browser, "#line"),
            "the other station of the line",
        )
        assert "02:5e:00:00:99:01" in _text(browser, "#line-failures")
        _shoot(browser, 1280, 800, tmp_path / "station-page-1280x800.png")
        _shoot(browser, 375, 667, tmp_path / "station-page-375x667.png")
    finally:
        release.set()
        stop.request()
        runner.join(60)
        closing.set()
        for watch in watches:
            watch.stop()
        server.close()
        for rig in rigs:
            rig.unplug()
    assert not runner.is_alive()
