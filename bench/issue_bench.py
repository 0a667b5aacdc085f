"""What issuing at the station costs: host CPU per issued board, and an offline build of 1,000.

Per board: the steps ``write --issue`` adds to a write, in the process that
holds the CA (the batch parent): the held-certificate check, a new key,
the certificate signed, the ledger row (SQLite, in a temp folder), the
board's plan built and checked, the result recorded. Measured as this
process's CPU time (``time.process_time``: SoftHSM runs inside this
process, so the token's signing is counted) over ``--boards`` boards, for a
file CA (EC P-256) and, when SoftHSM2 and python-pkcs11 are installed, a
CA key in a SoftHSM2 token. Also the rerun path (a board that already holds
its certificate: checked and kept). Targets: 20 ms per board with a file
CA, 100 ms with SoftHSM.

Offline: ``atflash build --chip esp32 --issue FILE --macs MACS.csv -o OUT``
for ``--devices`` MACs, timed as a subprocess (interpreter start to the
index: what an operator waits for), then resumed (every MAC kept). Target:
1,000 devices in under 30 s.

End to end: ``atflash write`` on ``--e2e-boards`` mock boards with the demo
files, then with ``--issue`` (a fresh ledger each run), as subprocesses; the
tool's CPU (its workers included, the mocks not) of each, and the difference
per board: what issuing adds on top of today's write, worker side included.

    python bench/issue_bench.py [--boards 200] [--devices 1000] [--e2e-boards 4] [--runs 3]

Not a test: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atflash.issue import Issuer, IssueResolver  # noqa: E402
from atflash.layout.profiles import find_profile  # noqa: E402
from atflash.planning.plan import BoardIdentity  # noqa: E402
from tools.issuing import make_ca  # noqa: E402


def per_board(issuer_file: Path, boards: int, label: str) -> None:
    profiles = [find_profile("esp32")]
    with Issuer.open(issuer_file, station="bench") as issuer:
        resolver = IssueResolver(issuer, profiles)
        macs = [
            f"24:0a:c4:{n >> 16:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}" for n in range(boards)
        ]
        held = {}
        cpu, wall = time.process_time(), time.perf_counter()
        for mac in macs:
            plans = resolver(BoardIdentity("bench", chip="esp32", mac=mac))
            issuer.record(resolver.pending.pop(mac), ok=True)
            items = {img.partition.name: img.items for img in plans[0].images}
            held[mac] = {name: tuple(c for _n, c in items[name]) for name in issuer.reads}
        issued_cpu = (time.process_time() - cpu) / boards
        issued_wall = (time.perf_counter() - wall) / boards
        cpu = time.process_time()
        for mac in macs:
            resolver(BoardIdentity("bench", chip="esp32", mac=mac, held=held[mac]))
        kept_cpu = (time.process_time() - cpu) / boards
    print(
        f"{label:<24} issued: {issued_cpu * 1000:6.2f} ms CPU/board ({issued_wall * 1000:6.2f} ms wall); "
        f"rerun kept: {kept_cpu * 1000:6.2f} ms CPU/board  [{boards} boards]"
    )


def end_to_end(folder: Path, issuer_file: Path, boards: int, runs: int) -> None:
    """``atflash write`` on mock boards: the demo files, then ``--issue``; the tool's CPU of each.

    The tool's CPU is that of the atflash process and everything it started
    (its workers, through the fork server), not the mock boards'. The
    difference per board is what issuing adds on top of a write, worker side
    included (reading the board's client_cert and client_key back first).
    """
    import resource

    from atflash.sim.flash import board_flash
    from atflash.sim.rom import distinct_mac, start_mock
    from bench.hostcpu import become_subreaper, reap_orphans

    become_subreaper()
    base = distinct_mac().rsplit(":", 1)[0]
    factory = board_flash("esp32")  # what an ESP-AT 2.x board holds
    mocks = [start_mock("esp32", mac=f"{base}:{n:02x}", flash=factory) for n in range(boards)]
    keep = {m.proc.pid for m in mocks}
    try:
        ports = [a for m in mocks for a in ("--port", m.url)]
        link = [
            "--before",
            "no-reset",
            "--after",
            "no-reset",
            "--retry",
            "1",
        ]  # a mock may drop a read
        demo = ROOT / "examples"
        files = ["client_cert", str(demo / "client.crt"), "client_key", str(demo / "client.key"),
                 "client_ca", str(demo / "ca.crt")]  # fmt: skip

        failed: list[str] = []

        def tool_cpu(args: list[str]) -> float | None:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(
                [sys.executable, "-m", "atflash", *args], capture_output=True, cwd=ROOT
            )
            reap_orphans(keep)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode:  # a mock on a loaded host drops a read now and then: not a figure
                failed.append(done.stderr.decode(errors="replace").strip().splitlines()[-1][:160])
                return None
            return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

        pairs = []
        for run in range(runs):
            plain = tool_cpu(["write", *ports, *link, *files])
            ledger = str(folder / f"e2e-{run}.sqlite")
            issuing = tool_cpu(
                ["write", "--issue", str(issuer_file), "--ledger", ledger, *ports, *link]
            )
            if plain is not None and issuing is not None:
                pairs.append((plain, issuing))
        if not pairs:
            print(
                f"atflash write, {boards} mock boards: no run finished ({failed[-1] if failed else ''})"
            )
            return
        p = sorted(x for x, _ in pairs)[len(pairs) // 2]
        i = sorted(y for _, y in pairs)[len(pairs) // 2]
        print(
            f"atflash write, {boards} mock boards (median of {len(pairs)} of {runs} runs): {p:5.2f} s "
            f"tool CPU with files, {i:5.2f} s with --issue: {(i - p) / boards * 1000:6.1f} ms more per board"
            + (f"; {len(failed)} run(s) failed, last: {failed[-1]}" if failed else "")
        )
    finally:
        for mock in mocks:
            mock.stop()


def softhsm_issuer(folder: Path) -> Path | None:
    try:
        from tools import softhsm
    except ImportError:
        return None
    if softhsm.find_module() is None:
        return None
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return None
    token = softhsm.start(folder / "softhsm")
    os.environ["ATFLASH_BENCH_PIN"] = token.pin
    (folder / "hsm-ca.crt").write_bytes(token.ca_cert_pem)
    issuer = folder / "hsm-issuer.toml"
    issuer.write_text(
        'ca_cert = "hsm-ca.crt"\n'
        f'ca_key = "pkcs11:token={token.token};object={token.object}"\n'
        f'pkcs11_module = "{token.module}"\npin_env = "ATFLASH_BENCH_PIN"\n'
    )
    return issuer


def offline(folder: Path, issuer_file: Path, devices: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    macs = folder / "macs.csv"
    macs.write_text(
        "".join(
            f"02:00:00:{n >> 16:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}\n" for n in range(devices)
        )
    )
    out = folder / "out"
    command = [sys.executable, "-m", "atflash", "build", "--chip", "esp32", "--issue", str(issuer_file),
               "--macs", str(macs), "-o", str(out)]  # fmt: skip
    for label in ("first run", "resumed"):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        tail = (done.stdout or done.stderr).strip().splitlines()[-1:]
        print(
            f"offline build --issue, {devices} devices, {label}: {seconds:6.2f} s (exit {done.returncode}) {tail}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", type=int, default=200)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument(
        "--e2e-boards", type=int, default=4, help="mock boards for the end-to-end run (0: none)"
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atflash-issue-bench-") as tmp:
        folder = Path(tmp)
        ca = make_ca(folder / "file-ca")
        per_board(ca.issuer, args.boards, "file CA (EC P-256)")
        hsm = softhsm_issuer(folder)
        if hsm is None:
            print("SoftHSM2 or python-pkcs11 missing: no HSM figure")
        else:
            per_board(hsm, args.boards, "SoftHSM2 CA (EC P-256)")
        if args.e2e_boards:
            end_to_end(folder, ca.issuer, args.e2e_boards, args.runs)
        if args.devices:
            offline(folder / "offline", make_ca(folder / "offline-ca").issuer, args.devices)


if __name__ == "__main__":
    main()
