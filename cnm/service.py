"""cnmd as a service: its configuration file, its logging, and systemd's readiness.

- ``--config-file`` (default ``/etc/cnm/daemon.json``, as dockerd's): a JSON object whose
  keys are the long flags without ``--`` (``"state-dir"``, ``"dns": [...]``,
  ``"debug": true``); a flag given on the command line wins over the file; a key that names
  no flag, or a value of the wrong kind, is refused by name. A missing default file is no
  error; a missing file that was asked for is.
- ``--log-level`` and ``--log-format text|json`` (one JSON object a line: time, level,
  logger, message).
- ``notify``: sd_notify(3) without libsystemd: a datagram to ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from cnm.errors import InvalidArgument

DEFAULT_CONFIG = "/etc/cnm/daemon.json"
LEVELS = ("debug", "info", "warning", "error")
# Flags that make no sense in the file: where the file is, and --version.
NOT_IN_FILE = frozenset({"config_file", "help", "version"})


def _actions(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every flag by its key in the file: the long option without -- (``state-dir``)."""
    out = {}
    for a in p._actions:
        longs = [s for s in a.option_strings if s.startswith("--")]
        if longs and a.dest not in NOT_IN_FILE and a.help != argparse.SUPPRESS:
            out[longs[0][2:]] = a
    return out


def _value(key: str, a: argparse.Action, v: Any, path: str) -> Any:
    where = f"{path}: {key!r}"
    if isinstance(a, argparse._StoreTrueAction):
        if not isinstance(v, bool):
            raise InvalidArgument(f"{where} must be true or false")
        return v
    if isinstance(a, argparse._AppendAction):
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise InvalidArgument(f"{where} must be a list of strings")
        return list(v)
    if a.type in (int, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidArgument(f"{where} must be a number")
        return a.type(v)
    if not isinstance(v, str):
        raise InvalidArgument(f"{where} must be a string")
    if a.choices is not None and v not in a.choices:
        raise InvalidArgument(f"{where} must be one of {', '.join(map(str, a.choices))}")
    return v


def load_config(p: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` over the values of the configuration file it names (flags win)."""
    args = p.parse_args(argv)
    path = args.config_file or DEFAULT_CONFIG
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        if args.config_file:
            raise InvalidArgument(f"--config-file {path}: no such file") from None
        return args
    except OSError as e:
        raise InvalidArgument(f"--config-file {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: expected a JSON object of flags")
    actions = _actions(p)
    for key in data:
        if key not in actions:
            raise InvalidArgument(f"{path}: unknown key {key!r}",
                                  hint="keys are cnmd's long flags: "
                                       + ", ".join(sorted(actions)))
    # Which flags the command line gave: a parse where nothing has a default.
    given = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for a in p._actions:
        if a.option_strings and not isinstance(a, (argparse._HelpAction,
                                                   argparse._VersionAction)):
            kwargs: dict[str, Any] = {"dest": a.dest, "default": argparse.SUPPRESS}
            if isinstance(a, argparse._StoreTrueAction):
                kwargs["action"] = "store_true"
            elif isinstance(a, argparse._AppendAction):
                kwargs["action"] = "append"
            given.add_argument(*a.option_strings, **kwargs)
    on_line = set(vars(given.parse_known_args(argv)[0]))
    for key, v in data.items():
        a = actions[key]
        if a.dest not in on_line:
            setattr(args, a.dest, _value(key, a, v, path))
    return args


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_Json() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))


def notify(state: str) -> bool:
    """sd_notify: send ``state`` ("READY=1", "STOPPING=1") to systemd; False when not run
    by it (no $NOTIFY_SOCKET)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(address)
            s.sendall(state.encode())
        except OSError as e:
            logging.getLogger("cnmd").warning("sd_notify %s to %s: %s", state, path, e)
            return False
    return True
