"""Credential pools: loading folders and CSV indexes, checking every set, ``atflash pool check``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from atflash.cli import cli
from atflash.errors import EXIT_USER_ERROR
from atflash.factory.errors import PoolError
from atflash.factory.pool import Pool, check_pool, load_pool, plans_for_set
from atflash.layout.profiles import find_profile

ESP32 = find_profile("esp32")
C3 = find_profile("esp32c3")


def put(folder: Path, files: dict[str, bytes | str]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return folder


@pytest.fixture
def pair(raw: Path) -> dict[str, bytes]:
    """The sample certificate and key that belong together, and a CA."""
    return {
        "cert": (raw / "client_cert" / "client_cert_00.crt").read_bytes(),
        "key": (raw / "client_key" / "client_key_00.key").read_bytes(),
        "ca": (raw / "client_ca" / "client_ca_00.crt").read_bytes(),
    }


@pytest.fixture
def pool_copy(credential_pool: Path, tmp_path: Path) -> Path:
    """The session's 200-set pool, copied so a test may spoil a set."""
    return Path(shutil.copytree(credential_pool, tmp_path / "pool"))


# -- loading ---------------------------------------------------------------------------


def test_folder_pool_sets_and_numbered_files_in_natural_order(tmp_path: Path) -> None:
    put(tmp_path, {
        **{f"{n}/client_{p}.{p}": "x" for n in (1, 2, 10) for p in ("cert", "key")},
        "1/client_ca.crt": "x", "10/client_ca.crt": "x",
        "2/client_ca.10.crt": "x", "2/client_ca.2.crt": "x", "2/client_ca.0.crt": "x",
        "2/.DS_Store": "x", ".git/config": "x",
    })  # fmt: skip
    pool = load_pool(tmp_path)
    assert pool.names == ("1", "2", "10")
    two = pool.get("2")
    assert [(r.partition, [Path(f).name for f in r.files]) for r in two.requests] == [
        ("client_ca", ["client_ca.0.crt", "client_ca.2.crt", "client_ca.10.crt"]),
        ("client_cert", ["client_cert.cert"]),
        ("client_key", ["client_key.key"]),
    ]
    assert two.requests[0].files[0] == str(tmp_path / "2" / "client_ca.0.crt")
    assert pool.partitions == ("client_ca", "client_cert", "client_key")


def test_csv_index_paths_relative_to_it_and_several_files(tmp_path: Path) -> None:
    index = put(tmp_path, {"sets/pool.csv": (
        "# made by the CA tool\n"
        "set,  client_cert,               client_key,   client_ca\n"
        "dev10, c/10.crt,                  k/10.key,     ca.crt\n"
        "dev9,  c/9a.crt; c/9b.crt,        k/9.key,      /abs/ca.crt\n"
    )}) / "sets" / "pool.csv"  # fmt: skip
    pool = load_pool(index)
    assert pool.names == ("dev9", "dev10")
    nine = pool.get("dev9")
    assert [(r.partition, r.files) for r in nine.requests] == [
        ("client_cert", (str(tmp_path / "sets/c/9a.crt"), str(tmp_path / "sets/c/9b.crt"))),
        ("client_key", (str(tmp_path / "sets/k/9.key"),)),
        ("client_ca", ("/abs/ca.crt",)),
    ]
    assert [r.partition for r in pool.get("dev10").requests] == [
        "client_cert", "client_key", "client_ca",
    ]  # fmt: skip


# One table: what is wrong, and what the one-line error must say (set and file).
BAD_POOLS: list[tuple[str, dict[str, str], str]] = [
    ("empty folder", {}, r"holds no credential sets"),
    ("stray file in a set", {"0001/client_cert.crt": "x", "0001/notes.txt": "x"},
     r"set 0001: .*0001/notes\.txt: not named after a PKI partition"),
    ("two files unnumbered", {"0001/client_cert.crt": "x", "0001/client_cert.pem": "x"},
     r"set 0001: client_cert\.crt and client_cert\.pem are both for one partition"),
    ("mixed numbering", {"0001/client_cert.crt": "x", "0001/client_cert.1.crt": "x"},
     r"set 0001: .* are both for one partition"),
    ("same number twice", {"0001/client_cert.1.crt": "x", "0001/client_cert.01.crt": "x"},
     r"set 0001: client_cert\.0?1\.crt and client_cert\.0?1\.crt have the same number 1"),
    ("empty set folder", {"0001/.keep": ""}, r"set 0001: .*0001 holds no credential files"),
    ("folder inside a set", {"0001/old/client_cert.crt": "x"}, r"set 0001: .*0001/old is a folder"),
    ("only a CSV in the folder", {"pool.csv": "set,client_cert\n"},
     r"no set folders here: to use a CSV index, give the CSV file itself"),
    ("CSV without sets", {"i.csv": "set,client_cert\n"}, r"i\.csv: the pool holds no credential sets"),
    ("CSV first column", {"i.csv": "device,client_cert\na,x\n"}, r"i\.csv:1: first column is 'device'"),
    ("CSV unknown column", {"i.csv": "set,client_cert,notes\n"},
     r"i\.csv:1: column 'notes' is not a PKI partition name"),
    ("CSV doubled column", {"i.csv": "set,client_ca,client_ca\n"}, r"i\.csv:1: column client_ca appears twice"),
    ("CSV duplicate set", {"i.csv": "set,client_cert\n0001,a.crt\n\n0001,b.crt\n"},
     r"i\.csv:4: set 0001: already given on line 2"),
    ("CSV row without files", {"i.csv": "set,client_cert\n0001,\n"}, r"i\.csv:2: set 0001: no files"),
    ("CSV too many cells", {"i.csv": "set,client_cert\n0001,a.crt,b.crt\n"},
     r"i\.csv:2: set 0001: 3 cells but the header has 2 columns"),
    ("CSV not text", {"i.csv": "\udcff"}, r"i\.csv: not UTF-8 text"),
    ("CSV empty cell", {"i.csv": "set,client_cert,client_key,client_ca\n1,a,b,c\n2,a,b,\n"},
     r"i\.csv: set 2: holds client_cert, client_key but set 1 holds client_ca, client_cert, client_key"),
    ("sets differ", {"1/client_cert.crt": "x", "1/client_key.key": "x", "2/client_cert.crt": "x"},
     r"set 2: holds client_cert but set 1 holds client_cert, client_key: every set holds the same"),
    ("a cert without its key", {"1/client_cert.crt": "x", "1/client_ca.crt": "x"},
     r"the sets hold client_cert but no client_key: add each set's client_key"),
    ("pool.toml unknown", {"1/client_cert.crt": "x", "pool.toml": "keyless = 1\n"},
     r"pool\.toml: unknown setting 'keyless'"),
    ("pool.toml not a cert", {"1/client_cert.crt": "x", "pool.toml": "cert_without_key = ['client_ca']\n"},
     r"pool\.toml: cert_without_key must list \*_cert partitions"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("files", "message"), [c[1:] for c in BAD_POOLS], ids=[c[0] for c in BAD_POOLS]
)
def test_bad_pool_layouts_are_refused_with_set_and_file(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
    target = tmp_path / "i.csv" if "i.csv" in files else tmp_path
    with pytest.raises(PoolError, match=message) as caught:
        load_pool(target)
    assert "\n" not in str(caught.value)


def test_a_missing_pool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PoolError, match=r"nothing: no such folder or file"):
        load_pool(tmp_path / "nothing")


def test_a_pool_pickles_with_its_name_index(credential_pool: Path) -> None:
    import pickle

    pool = pickle.loads(pickle.dumps(load_pool(credential_pool)))
    assert isinstance(pool, Pool)
    assert len(pool) == 200
    assert pool.get("0137").name == "0137"
    with pytest.raises(PoolError, match=r"set 0201: no such set in this pool"):
        pool.get("0201")


# -- checking ---------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])
def test_check_pool_passes_a_good_pool_and_reports_progress(
    credential_pool: Path, jobs: int
) -> None:
    seen: list[tuple[int, int]] = []
    check_pool(
        load_pool(credential_pool),
        [ESP32, C3],
        jobs=jobs,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[0] == (0, 200)
    assert seen[-1] == (200, 200)
    assert [d for d, _t in seen] == sorted(d for d, _t in seen)


@pytest.mark.parametrize("jobs", [1, 2])
def test_check_pool_finds_a_bad_key_in_set_0137_among_200(pool_copy: Path, jobs: int) -> None:
    (pool_copy / "0137" / "client_key.key").write_bytes(
        (pool_copy / "0137" / "client_cert.crt").read_bytes()
    )
    with pytest.raises(PoolError) as caught:
        check_pool(load_pool(pool_copy), [ESP32], jobs=jobs)
    assert caught.value.set_name == "0137"
    assert f"set 0137: {pool_copy / '0137' / 'client_key.key'}: " in str(caught.value)
    assert "private key" in str(caught.value)


def test_check_pool_reports_the_earliest_bad_set(pool_copy: Path) -> None:
    for name in ("0190", "0137", "0150"):
        (pool_copy / name / "client_cert.crt").write_text("not a certificate")
    with pytest.raises(PoolError, match=r"set 0137: .*0137/client_cert\.crt"):
        check_pool(load_pool(pool_copy), [ESP32], jobs=2)


def test_check_pool_refuses_a_key_that_does_not_match_its_certificate(pool_copy: Path) -> None:
    shutil.copy(pool_copy / "0006" / "client_key.key", pool_copy / "0005" / "client_key.key")
    with pytest.raises(PoolError, match=r"set 0005: certificate .*0005/client_cert\.crt \(ID 0\) "
                                        r"does not match key .*0005/client_key\.key"):  # fmt: skip
        check_pool(load_pool(pool_copy), [ESP32], jobs=2)


def test_check_pool_refuses_two_sets_with_one_identity(pool_copy: Path) -> None:
    for name in ("client_cert.crt", "client_key.key"):
        shutil.copy(pool_copy / "0002" / name, pool_copy / "0009" / name)
    with pytest.raises(
        PoolError, match=r"set 0009: client_cert has the same certificate as set 0002's client_cert"
    ):
        check_pool(load_pool(pool_copy), [ESP32], jobs=2)


def test_check_pool_refuses_a_set_that_does_not_fit_or_a_partition_the_profile_lacks(
    tmp_path: Path, pair: dict[str, bytes]
) -> None:
    files = {f"0001/client_ca.{n}.crt": pair["ca"] for n in range(12)}  # 12 x ~1.3 KB > 8 KB
    pool = load_pool(put(tmp_path / "big", files))
    with pytest.raises(
        PoolError, match=r"set 0001: client_ca: image is \d+ bytes but the partition holds 8192"
    ):
        check_pool(pool, [ESP32], jobs=1)
    odd = {"0001/extra_cert.crt": pair["cert"], "0001/extra_key.key": pair["key"]}
    pool = load_pool(put(tmp_path / "odd", odd))
    with pytest.raises(PoolError, match=r"set 0001: no partition 'extra_cert' in profile esp32"):
        check_pool(pool, [ESP32], jobs=1)


def test_files_are_size_capped_before_they_are_read_whole(
    tmp_path: Path, pair: dict[str, bytes]
) -> None:
    big = tmp_path / "big"
    put(big, {"0001/client_cert.crt": pair["cert"], "0001/client_key.key": pair["key"]})
    with (big / "0001" / "client_ca.crt").open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: costs no disk, would cost 64 MiB of RAM
    with pytest.raises(
        PoolError, match=r"set 0001: .*client_ca\.crt: .*a PKI item holds at most 65535"
    ):
        check_pool(load_pool(big), [ESP32], jobs=1)


def test_plans_for_a_set_are_its_own_files(credential_pool: Path) -> None:
    pool = load_pool(credential_pool)
    esp32, c3 = plans_for_set(pool.source, pool.get("0042"), [ESP32, C3])
    assert (esp32.profile.name, c3.profile.name) == ("esp32", "esp32c3")
    assert {img.partition.name: img.sources for img in esp32.images}["client_key"] == (
        str(credential_pool / "0042" / "client_key.key"),
    )


# -- the command ------------------------------------------------------------------------


def test_pool_check_command_plain_progress_then_one_line(credential_pool: Path) -> None:
    result = CliRunner().invoke(
        cli, ["pool", "check", str(credential_pool), "--chip", "esp32", "-j", "2"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{credential_pool}: 200 sets OK for esp32 and 10 other layouts (client_ca, client_cert, client_key)\n"
    )
    assert result.stderr.splitlines() == [f"checked {n}/200 sets" for n in (50, 100, 150, 200)]


def test_pool_check_command_error_is_one_line_exit_2(pool_copy: Path) -> None:
    (pool_copy / "0137" / "client_key.key").write_text("garbage")
    result = CliRunner().invoke(cli, ["pool", "check", str(pool_copy), "--chip", "esp32"])
    assert result.exit_code == EXIT_USER_ERROR
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("atflash:")]
    assert line.startswith(
        f"atflash: error: {pool_copy}: set 0137: {pool_copy / '0137' / 'client_key.key'}"
    )
