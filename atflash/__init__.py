"""atflash: provision ESP-AT modules with TLS credentials.

Builds AtPKI-identical PKI bins, checks them against the board's partition
layout, and writes them through esptool or over the AT command port.

The public Python API (:mod:`atflash.api`, docs/scripting.md) is importable
from here: ``atflash.plan``, ``atflash.connect``, ``atflash.run_batch``,
``atflash.build_images``, ... Each name is loaded on first use, so ``import
atflash`` stays as light as the command line's start needs (no esptool, no
cryptography until a function is called).
"""

# Not typing's: importing typing would cost the command line's start a tenth of
# its time. Type checkers take any TYPE_CHECKING as true.
TYPE_CHECKING = False

__version__ = "0.1.0"

__all__ = [
    "AtError",
    "AtflashError",
    "Blob",
    "Board",
    "BoardIdentity",
    "BoardResult",
    "BoardSkipped",
    "BoardTableError",
    "BoardTables",
    "ChipMismatchError",
    "ContentError",
    "DeviceError",
    "Dump",
    "Event",
    "FileInputError",
    "FirmwareError",
    "ImageTooBigError",
    "InputError",
    "Issuer",
    "PairingError",
    "PartitionResult",
    "PartitionStatus",
    "Plan",
    "PortError",
    "ProfileError",
    "RunOutcome",
    "SlotSpec",
    "Station",
    "StationOptions",
    "TableMismatchError",
    "VerifyError",
    "__version__",
    "build_devices",
    "build_images",
    "connect",
    "generate_bin",
    "inspect_files",
    "load_backups",
    "parse_bin",
    "patch_image",
    "plan",
    "restore",
    "run_batch",
    "unpack_bin",
]

# Public name -> the module that defines it (atflash.api unless said here).
_HOME = {
    "Issuer": "atflash.issue",
    "Blob": "atflash.files",
    "inspect_files": "atflash.content.describe",
    "BoardIdentity": "atflash.planning.plan",
    "BoardResult": "atflash.results",
    "BoardTables": "atflash.backends.base",
    "Event": "atflash.events",
    "PartitionResult": "atflash.results",
    "PartitionStatus": "atflash.results",
    "RunOutcome": "atflash.run.runner",
    "SlotSpec": "atflash.run.slots",
    "Station": "atflash.station",
    "StationOptions": "atflash.station",
}
_ERRORS = frozenset(
    {
        "AtError",
        "AtflashError",
        "BoardSkipped",
        "BoardTableError",
        "ChipMismatchError",
        "ContentError",
        "DeviceError",
        "FileInputError",
        "FirmwareError",
        "ImageTooBigError",
        "InputError",
        "PairingError",
        "PortError",
        "ProfileError",
        "TableMismatchError",
        "VerifyError",
    }
)  # the error tree, atflash.errors


def __getattr__(name: str) -> object:
    if name not in __all__ or name == "__version__":
        raise AttributeError(f"module 'atflash' has no attribute {name!r}")
    module = "atflash.errors" if name in _ERRORS else _HOME.get(name, "atflash.api")
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from atflash.api import (
        Board,
        Dump,
        Plan,
        build_devices,
        build_images,
        connect,
        generate_bin,
        load_backups,
        parse_bin,
        patch_image,
        plan,
        restore,
        run_batch,
        unpack_bin,
    )
    from atflash.backends.base import BoardTables
    from atflash.content.describe import inspect_files
    from atflash.errors import (
        AtError,
        AtflashError,
        BoardSkipped,
        BoardTableError,
        ChipMismatchError,
        ContentError,
        DeviceError,
        FileInputError,
        FirmwareError,
        ImageTooBigError,
        InputError,
        PairingError,
        PortError,
        ProfileError,
        TableMismatchError,
        VerifyError,
    )
    from atflash.events import Event
    from atflash.files import Blob
    from atflash.planning.plan import BoardIdentity
    from atflash.results import BoardResult, PartitionResult, PartitionStatus
    from atflash.run.runner import RunOutcome
    from atflash.run.slots import SlotSpec
    from atflash.station import Station, StationOptions
