"""cnm-cni: a CNI 1.1 plugin on cnm's networks. A runtime runs it once per call with the
CNI_* environment and the plugin configuration on stdin; it answers on stdout (a result,
or an error {cniVersion, code, msg, details}) and exits 0 or 1.

This module is the one place that turns every failure into the spec's error: a CniError
as it is, a CnmError (cnmd's, or the client's) through the code table of cnm.errors, and
anything else as code 999 without a traceback (CNM_CNI_DEBUG=1 prints one on stderr).
"""

from __future__ import annotations

import json
import os
import sys

from cnm.cni import spec
from cnm.cni.spec import CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO, TextIO


def run(environ: dict[str, str], stdin: BinaryIO, stdout: TextIO) -> int:
    version = spec.LATEST  # for an error before the configuration says otherwise
    try:
        command = spec.command_of(environ)
        try:
            raw = stdin.read()
        except OSError as e:
            raise CniError(spec.IO_FAILURE, "cannot read the configuration on stdin",
                           str(e)) from None
        if command == "VERSION":
            _write(stdout, spec.version_result(spec.decode(raw) if raw.strip() else None))
            return 0
        data = spec.decode(raw)
        if isinstance(data.get("cniVersion"), str) and data["cniVersion"] in spec.VERSIONS:
            version = data["cniVersion"]
        inv = spec.parse_env(environ)
        conf = spec.parse_config(data, inv)
        out = _dispatch(inv, conf, environ)
        if out is not None:
            _write(stdout, out)
        return 0
    except CniError as e:
        _write(stdout, e.to_dict(version))
    except Exception as e:  # noqa: BLE001 - the one place a failure becomes the spec's error
        _write(stdout, _translate(e, environ).to_dict(version))
    return 1


def _dispatch(inv: spec.Invocation, conf: spec.NetConf,
              environ: dict[str, str]) -> dict[str, Any] | None:
    from cnm.address import DEFAULT_HOST, parse_unix_address
    from cnm.cni import attach
    from cnm.cni.wire import Api
    from cnm.errors import InvalidArgument

    try:
        path = parse_unix_address(conf.socket or environ.get("CNM_HOST") or DEFAULT_HOST)
    except InvalidArgument as e:
        raise CniError(spec.BAD_ENVIRONMENT, f"CNM_HOST: {e.message}") from None
    api = Api(path)
    try:
        if inv.command == "ADD":
            return attach.add(api, inv, conf)
        if inv.command == "DEL":
            attach.delete(api, inv, conf)
        elif inv.command == "CHECK":
            attach.check(api, inv, conf)
        elif inv.command == "STATUS":
            attach.status(api, conf)
        else:
            attach.gc(api, conf)
        return None
    finally:
        api.close()


def _translate(e: Exception, environ: dict[str, str]) -> CniError:
    from cnm.errors import CnmError, cni_code

    if isinstance(e, CnmError):
        return CniError(cni_code(e), e.message, e.hint or "")
    if environ.get("CNM_CNI_DEBUG") == "1":
        import traceback

        traceback.print_exc(file=sys.stderr)
    return CniError(spec.INTERNAL, f"internal error in cnm-cni: {type(e).__name__}: {e}",
                    "set CNM_CNI_DEBUG=1 for a traceback on stderr")


def _write(stdout: TextIO, obj: dict[str, Any]) -> None:
    stdout.write(json.dumps(obj))
    stdout.write("\n")
    stdout.flush()


def main() -> None:
    sys.exit(run(dict(os.environ), sys.stdin.buffer, sys.stdout))
