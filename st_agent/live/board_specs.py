"""Which board each performer of a jam wears, and how it connects.

On the command line (``st-agent jam --boards``), comma-separated, one item per performer::

    synthetic,virtual                          # names alone (BrainFlow names or ids)
    cyton:/dev/ttyUSB0,muse_2:00:55:DA:B0:12:34  # NAME:SERIAL_PORT or NAME:MAC_ADDRESS
    ganglion:COM4,lsl:OpenBCI_EEG,file:rest.edf

A board name has no colon, so an item is read as the name up to the first colon and a
connection after it: a serial port when it looks like one (a path ``/dev/...``, or
``COM3`` / ``\\\\.\\COM12`` on Windows), a Bluetooth MAC address when it is six hex pairs
(``00:55:DA:B0:12:34`` or with ``-``); anything else is refused. ``lsl:<stream>`` and
``file:<path>`` keep their whole text (they are sources, not connections).

Anything more (a serial port *and* a MAC, ``other_info``) goes in a file
(``--boards-file boards.toml``; JSON with the same fields works too)::

    [[performer]]
    board = "cyton"
    serial_port = "/dev/ttyUSB0"

    [[performer]]
    board = "muse_2"
    mac_address = "00:55:DA:B0:12:34"
    other_info = ""

Checked together before anything opens (:func:`check_board_specs`): every board known
(the message lists them), the boards that need a serial port have one, and no two
performers share a serial port or a MAC address.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from st_agent.errors import DataError, UsageError

__all__ = ["BOARDS_FILE_KEYS", "BoardSpec", "check_board_specs", "load_boards_file",
           "parse_board_item", "parse_boards"]

_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")
_WIN_PORT = re.compile(r"(\\\\\.\\)?COM[0-9]{1,3}", re.IGNORECASE)
_SOURCE_PREFIXES = ("lsl:", "file:")
_VIRTUAL = "virtual"

#: Fields a performer may have in a boards file.
BOARDS_FILE_KEYS = ("board", "serial_port", "mac_address", "other_info")


@dataclass(frozen=True)
class BoardSpec:
    """One performer's board and connection.

    Parameters
    ----------
    board : str
        BrainFlow name or id, ``virtual``, ``lsl:<stream>`` or ``file:<path>``.
    serial_port : str
        Port of the board or its dongle; empty: none.
    mac_address : str
        Bluetooth MAC address; empty: none.
    other_info : str or None
        BrainFlow's ``other_info``; None: the jam's default (one per performer).
    """

    board: str
    serial_port: str = ""
    mac_address: str = ""
    other_info: str | None = None

    def __str__(self) -> str:
        conn = self.serial_port or self.mac_address
        return f"{self.board}:{conn}" if conn else self.board


def is_serial_port(text: str) -> bool:
    """Whether ``text`` looks like a serial port (``/dev/ttyUSB0``, ``COM3``)."""
    return (text.startswith("/") and len(text) > 1) or bool(_WIN_PORT.fullmatch(text))


def is_mac_address(text: str) -> bool:
    """Whether ``text`` is six hex pairs separated by ``:`` (or ``-``)."""
    return bool(_MAC.fullmatch(text))


def parse_board_item(item: str, where: str = "--boards") -> BoardSpec:
    """Read one ``NAME[:SERIAL_PORT | :MAC_ADDRESS]`` item.

    Parameters
    ----------
    item : str
    where : str
        How messages name the item's origin.

    Raises
    ------
    UsageError
        For an empty name or a connection that is neither a serial port nor a MAC.
    """
    text = item.strip()
    if text.lower().startswith(_SOURCE_PREFIXES):
        return BoardSpec(text)
    name, sep, conn = text.partition(":")
    name, conn = name.strip(), conn.strip()
    if not name:
        raise UsageError(f"{where} item {item!r} has no board name; expected NAME, "
                         "NAME:SERIAL_PORT or NAME:MAC_ADDRESS, e.g. cyton:/dev/ttyUSB0")
    if not sep:
        return BoardSpec(name)
    if is_mac_address(conn):
        return BoardSpec(name, mac_address=conn.upper().replace("-", ":"))
    if is_serial_port(conn):
        return BoardSpec(name, serial_port=conn)
    raise UsageError(
        f"{where} item {item!r}: {conn!r} after the board name is neither a serial port "
        "(/dev/ttyUSB0, /dev/cu.usbserial-DM00, COM3) nor a Bluetooth MAC address "
        "(00:55:DA:B0:12:34); for other settings use --boards-file")


def parse_boards(text: str) -> list[BoardSpec]:
    """Read ``--boards``: comma-separated items (:func:`parse_board_item`)."""
    if not isinstance(text, str):
        raise UsageError(f"--boards must be text such as 'synthetic,synthetic', got "
                         f"{type(text).__name__}")
    return [parse_board_item(item) for item in text.split(",") if item.strip()]


def _performer(i: int, entry: Any, path: Path) -> BoardSpec:
    where = f"boards file {path}, performer {i}"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a table with board = \"...\", got "
                        f"{type(entry).__name__}")
    unknown = sorted(set(entry) - set(BOARDS_FILE_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: "
                        f"{', '.join(BOARDS_FILE_KEYS)}")
    for key, value in entry.items():
        if not isinstance(value, str):
            raise DataError(f"{where}: {key} must be a string, got {value!r}")
    board = entry.get("board", "").strip()
    if not board:
        raise DataError(f"{where}: board is missing or empty; e.g. board = \"cyton\"")
    port, mac = entry.get("serial_port", "").strip(), entry.get("mac_address", "").strip()
    if mac and not is_mac_address(mac):
        raise DataError(f"{where}: mac_address {mac!r} is not six hex pairs such as "
                        "00:55:DA:B0:12:34")
    return BoardSpec(board, port, mac.upper().replace("-", ":"), entry.get("other_info"))


def load_boards_file(path: Path) -> list[BoardSpec]:
    """Read a boards file: TOML (``[[performer]]`` tables) or JSON (``.json``: a list of
    objects, or ``{"performer": [...]}``), fields :data:`BOARDS_FILE_KEYS`.

    Raises
    ------
    DataError
        A missing, unreadable or malformed file, naming the file and the field.
    """
    import tomllib

    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"--boards-file {path} cannot be read: {e.strerror or e}") from e
    if len(raw) > 1_000_000:
        raise DataError(f"--boards-file {path} is {len(raw)} bytes; a boards file is a few "
                        "lines")
    try:
        text = raw.decode("utf-8")
        doc: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise DataError(f"--boards-file {path} is not valid "
                        f"{'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {e}") from e
    if isinstance(doc, dict):
        extra = sorted(set(doc) - {"performer"})
        if extra:
            raise DataError(f"--boards-file {path}: unknown key(s) {', '.join(extra)}; the "
                            "file holds one [[performer]] table per performer")
        doc = doc.get("performer")
    if not isinstance(doc, list) or not doc:
        raise DataError(f"--boards-file {path} names no performer; write one [[performer]] "
                        "table (board = \"...\") per performer")
    return [_performer(i, entry, path) for i, entry in enumerate(doc)]


def _port_key(port: str) -> str:
    if _WIN_PORT.fullmatch(port):
        return port.upper().removeprefix("\\\\.\\")
    return os.path.realpath(port) if os.path.exists(port) else os.path.normpath(port)


def check_board_specs(specs: list[BoardSpec], where: str = "--boards") -> None:
    """Refuse, before anything opens, boards that cannot all connect.

    Raises
    ------
    UnknownBoardError
        A board BrainFlow does not know (the message lists the known ones).
    UsageError
        A board that needs a serial port without one, a connection given to a board that
        takes none, or two performers on one serial port or one MAC address.
    """
    from st_agent.biometrics.sources import BOARD_REQUIREMENTS, UnknownBoardError, resolve_board
    from st_agent.live.inputs import check_board

    ports: dict[str, int] = {}
    macs: dict[str, int] = {}
    for i, spec in enumerate(specs):
        try:
            check_board(spec.board)
        except UnknownBoardError as e:
            raise UnknownBoardError(f"{where}: performer {i}: {e}") from e
        src = spec.board == _VIRTUAL or spec.board.lower().startswith(_SOURCE_PREFIXES)
        if src and (spec.serial_port or spec.mac_address):
            raise UsageError(f"{where}: performer {i}: {spec.board!r} takes no serial port "
                             "or MAC address")
        name = spec.board if src else resolve_board(
            int(spec.board) if spec.board.isdigit() else spec.board)[0]
        need = BOARD_REQUIREMENTS.get(name)
        if need is not None and need[0] == "serial_port" and not spec.serial_port:
            raise UsageError(f"{where}: performer {i}: board {name!r} needs a serial port, "
                             f"e.g. --boards {name}:/dev/ttyUSB0 ({need[1]})")
        for value, seen, what in ((spec.serial_port and _port_key(spec.serial_port), ports,
                                   "serial port"), (spec.mac_address, macs, "MAC address")):
            if not value:
                continue
            if value in seen:
                raise UsageError(f"{where}: performers {seen[value]} and {i} are both on "
                                 f"{what} {value}; each performer needs their own board")
            seen[value] = i

