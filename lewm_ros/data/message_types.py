"""Message types of a bag: ROS 2 type names, their .msg definitions and RIHS01 hashes, without ROS.

Known types come from rosbags' type store of the distro; others from `share/<pkg>/msg/<Type>.msg` of the
installed packages, so the recorder can store any type a robot publishes.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from lewm_ros.data.bag_errors import BagError

# The type store each ROS distribution's definitions come from (the messages we use are alike in both).
TYPESTORES = {"jazzy": Stores.ROS2_JAZZY, "humble": Stores.ROS2_HUMBLE}


def normalize_type(name: str) -> str:
    """`pkg/Type` or `pkg/msg/Type` -> `pkg/msg/Type`; anything else is refused (BagError)."""
    parts = name.strip().split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg" or not all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in parts):
        raise BagError(f"not a message type name: {name!r} (expected pkg/msg/Type)")
    return "/".join(parts)


def _share_dirs() -> list[Path]:
    prefixes = [*filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)), sys.prefix]
    return [Path(prefix) / "share" for prefix in prefixes]


_BUILTIN_FIELD_TYPES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
    "int64", "uint64", "string", "wstring", "time", "duration",
}  # fmt: skip


class MessageTypes:
    """Message definitions (ROS 2 .msg text with dependencies) and RIHS01 hashes of the types a bag holds.

    Known types come from rosbags' type store of the running distro (ROS_DISTRO humble or jazzy); others
    are read from `share/<pkg>/msg/<Type>.msg` of the installed packages (AMENT_PREFIX_PATH, then this
    Python's prefix, where the PyPI ROS wheels put them). Not thread-safe: one owner.
    """

    def __init__(self, search: Iterable[Path] | None = None) -> None:
        distro = os.environ.get("ROS_DISTRO", "jazzy").lower()
        self.store = get_typestore(TYPESTORES.get(distro, Stores.ROS2_JAZZY))
        self._search = list(search) if search is not None else _share_dirs()

    def definition(self, msgtype: str) -> tuple[str, str]:
        """(message definition, RIHS01 hash) of `msgtype`; BagError when neither store nor share knows it."""
        msgtype = normalize_type(msgtype)
        self._load(msgtype, set())
        msgdef, _ = self.store.generate_msgdef(msgtype, ros_version=2)
        return msgdef, self.store.hash_rihs01(msgtype)

    def _load(self, msgtype: str, seen: set[str]) -> None:
        if msgtype in self.store.fielddefs or msgtype in seen:
            return
        seen.add(msgtype)
        package, _, name = msgtype.split("/")
        for share in self._search:
            path = share / package / "msg" / f"{name}.msg"
            if path.is_file():
                text = path.read_text()
                break
        else:
            raise BagError(
                f"unknown message type {msgtype}: not in rosbags' type store and no {package}/msg/{name}.msg "
                f"under {', '.join(str(s) for s in self._search) or 'any share directory'}"
            )
        for dependency in self._dependencies(text, package):
            self._load(dependency, seen)
        self.store.register(get_types_from_msg(text, msgtype))

    @staticmethod
    def _dependencies(text: str, package: str) -> list[str]:
        """Message types the fields of a .msg text refer to (constants and builtin types left out)."""
        found = []
        for line in text.splitlines():
            tokens = line.split("#", 1)[0].split(None, 2)
            if len(tokens) < 2 or "=" in tokens[1] or (len(tokens) > 2 and tokens[2].lstrip().startswith("=")):
                continue  # blank, comment or constant
            base = re.sub(r"\[.*\]$", "", tokens[0]).split("<=")[0]
            if base in _BUILTIN_FIELD_TYPES:
                continue
            found.append(normalize_type(base if "/" in base else f"{package}/{base}"))
        return found


def rihs01_from_definition(msgtype: str, msgdef: str) -> str:
    """The RIHS01 hash of a type from its stored definition text ('' when it cannot be parsed)."""
    try:
        store = get_typestore(Stores.EMPTY)
        store.register(get_types_from_msg(msgdef, msgtype))
        return store.hash_rihs01(msgtype)
    except Exception:  # a definition from a foreign bag: the hash is optional metadata
        return ""
