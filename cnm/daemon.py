"""cnmd: one daemon per host namespace. Reconciles, then serves the API until SIGTERM.

SIGTERM stops the daemon and leaves networks and sandboxes as they are; the next start
picks them up (reconcile).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import logging
import os
import resource
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from cnm import __version__, service, wiring
from cnm.api import listen
from cnm.api.server import claim_socket
from cnm.cluster import ClusterConfig
from cnm.core import Config
from cnm.dns.server import is_address
from cnm.drivers.registry import builtin
from cnm.drivers.remote import Drivers
from cnm.errors import CnmError, InvalidArgument, exit_code
from cnm.esp import parse_duration
from cnm.ipam import DEFAULT_POOLS, Pool, parse_cidr
from cnm.kernel import netns
from cnm.store.etcdclient import Tls, parse_endpoints
from cnm.tls import TlsFiles, check_key

log = logging.getLogger("cnmd")
# Where dockerd looks for plugins: the socket's name is the plugin's (`-d cnm`).
DOCKER_PLUGIN = "/run/docker/plugins/cnm.sock"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnmd", description="The cnm daemon.")
    p.add_argument("--netns", metavar="PATH",
                   help="manage this network namespace instead of the daemon's own")
    p.add_argument("--state-dir", default="/var/lib/cnm", metavar="DIR")
    p.add_argument("--run-dir", default="/run/cnm", metavar="DIR")
    p.add_argument("-H", "--host", action="append", default=[], metavar="ADDRESS",
                   help="listen on unix://PATH or tcp://HOST:PORT (mutual TLS only), "
                        "repeatable (default: unix://RUN_DIR/cnm.sock)")
    p.add_argument("--tlsverify", action="store_true",
                   help="serve tcp:// listeners only to clients with a certificate the CA "
                        "signed (required for tcp://)")
    p.add_argument("--tlscacert", metavar="FILE", help="the CA that signs client certificates")
    p.add_argument("--tlscert", metavar="FILE", help="the daemon's certificate")
    p.add_argument("--tlskey", metavar="FILE", help="the daemon's key (mode 0600)")
    p.add_argument("--group", metavar="NAME",
                   help="group of the unix sockets (mode 0660; default: root's)")
    p.add_argument("--default-address-pool", action="append", default=[],
                   metavar="base=CIDR,size=N",
                   help="replaces the default pools for automatic subnets (repeatable)")
    p.add_argument("--bridge-subnet", metavar="CIDR",
                   help="subnet of the default bridge network (default 172.17.0.0/16)")
    p.add_argument("--bridge-name", default="cnm0", metavar="NAME",
                   help="Linux bridge of the default network")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf", metavar="PATH",
                   help="the host's resolver configuration, copied into sandboxes")
    p.add_argument("--dns", action="append", default=[], metavar="IP",
                   help="upstream resolver for names the embedded DNS does not hold "
                        "(repeatable, at most 3; default: the host's resolv.conf)")
    p.add_argument("--docker-plugin", default=DOCKER_PLUGIN, metavar="PATH|none",
                   help="serve Docker's network and IPAM plugin protocol on this socket, "
                        f"as the plugin 'cnm' (default {DOCKER_PLUGIN}; none: not at all)")
    p.add_argument("--plugin-dir", default="/run/docker/plugins", metavar="DIR",
                   help="where `network create -d NAME` finds Docker network plugins "
                        "(NAME.sock) for cnm's remote driver (default /run/docker/plugins)")
    g = p.add_argument_group("cluster (overlay networks across hosts)")
    g.add_argument("--cluster-store", metavar="etcd://ADDR:PORT[,ADDR:PORT…]",
                   help="the etcd cluster every host shares: global networks live there; "
                        "spoken over TLS when --cluster-store-ca or -cert is given (the "
                        "scheme stays etcd://, as Docker's with kv.cacertfile)")
    g.add_argument("--advertise-addr", metavar="IP",
                   help="this host's underlay address (its VTEP), reached by the others")
    g.add_argument("--cluster-store-ca", metavar="PATH",
                   help="TLS: the CA that signed the etcd members' certificates (each for "
                        "the address --cluster-store names it by); Docker's kv.cacertfile")
    g.add_argument("--cluster-store-cert", metavar="PATH",
                   help="TLS: this host's client certificate, for members that require one "
                        "(etcd --client-cert-auth); kv.certfile")
    g.add_argument("--cluster-store-key", metavar="PATH",
                   help="TLS: its private key (mode 0600); kv.keyfile")
    g.add_argument("--cluster-ttl", type=int, default=10, metavar="SECONDS",
                   help="a host that stops renewing vanishes from the others within this "
                        "(default 10)")
    g.add_argument("--cluster-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="an operation needing the store fails after this (default 5)")
    g.add_argument("--cluster-key-rotation", default="12h", metavar="DURATION",
                   help="encrypted overlays' cluster key is replaced when this old "
                        "(12h, 30m, 90s; default 12h)")
    g.add_argument("--cluster-prefix", default="/cnm/", help=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true", help="log at debug level")
    # As a service (cnm/service.py): the configuration file, logging, systemd's readiness.
    p.add_argument("--config-file", metavar="PATH",
                   help="flags as JSON keys (\"state-dir\": \"/var/lib/cnm\"); flags given "
                        f"here win (default {service.DEFAULT_CONFIG}, if it exists)")
    p.add_argument("--log-level", choices=service.LEVELS, default="info",
                   help="debug, info, warning or error (default info; --debug: debug)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="text, or json: one object a line (default text)")
    p.add_argument("--version", action="version", version=f"cnmd {__version__}")
    return p


def config_from(args: argparse.Namespace) -> Config:
    if args.netns and not netns.is_netns(args.netns):
        raise InvalidArgument(f"--netns {args.netns}: not a network namespace")
    pools = tuple(Pool.parse(p) for p in args.default_address_pool) or DEFAULT_POOLS
    if args.bridge_subnet:
        parse_cidr(args.bridge_subnet, "--bridge-subnet")
    for server in args.dns:
        if not is_address(server):
            raise InvalidArgument(f"--dns {server}: not an IP address")
    return Config(
        state_dir=os.path.abspath(args.state_dir), run_dir=os.path.abspath(args.run_dir),
        host_netns=os.path.abspath(args.netns) if args.netns else None, pools=pools,
        default_bridge_subnet=args.bridge_subnet, default_bridge_name=args.bridge_name,
        resolv_conf=args.resolv_conf,
    )


def cluster_from(args: argparse.Namespace) -> ClusterConfig | None:
    if args.cluster_store is None:
        if (args.advertise_addr or args.cluster_store_ca or args.cluster_store_cert
                or args.cluster_store_key):
            raise InvalidArgument("--advertise-addr and --cluster-store-* need --cluster-store")
        return None
    endpoints = parse_endpoints(args.cluster_store)
    if not args.advertise_addr:
        raise InvalidArgument("--cluster-store needs --advertise-addr IP: this host's "
                              "underlay address, which the other hosts reach")
    if not is_address(args.advertise_addr):
        raise InvalidArgument(f"--advertise-addr {args.advertise_addr}: not an IP address")
    if not 2 <= args.cluster_ttl <= 3600:
        raise InvalidArgument(f"--cluster-ttl {args.cluster_ttl}: expected 2-3600 seconds")
    if not 0.1 <= args.cluster_timeout <= 600:
        raise InvalidArgument(f"--cluster-timeout {args.cluster_timeout:g}: expected "
                              "0.1-600 seconds")
    for flag in ("ca", "cert", "key"):
        path = getattr(args, f"cluster_store_{flag}")
        if path and not os.path.isfile(path):
            raise InvalidArgument(f"--cluster-store-{flag} {path}: no such file")
    if bool(args.cluster_store_cert) != bool(args.cluster_store_key):
        raise InvalidArgument("--cluster-store-cert and --cluster-store-key go together")
    tls = (Tls(args.cluster_store_ca, args.cluster_store_cert, args.cluster_store_key)
           if args.cluster_store_ca or args.cluster_store_cert else None)
    rotation = parse_duration(args.cluster_key_rotation)
    if tls is not None:
        _check_store_tls(tls)
    return ClusterConfig(tuple(endpoints), str(ipaddress.ip_address(args.advertise_addr)),
                         ttl=args.cluster_ttl, timeout=args.cluster_timeout, tls=tls,
                         prefix=args.cluster_prefix, key_rotation=rotation)


def _check_store_tls(tls: Tls) -> None:
    """The files load as a CA, a certificate and its key (before anything is started)."""
    if tls.key:
        check_key(tls.key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca:
        try:
            ctx.load_verify_locations(cafile=tls.ca)
        except ssl.SSLError as e:
            raise InvalidArgument(f"--cluster-store-ca {tls.ca}: not a PEM CA certificate "
                                  f"({e.reason or e})") from None
    if tls.cert:
        try:
            ctx.load_cert_chain(tls.cert, tls.key)
        except ssl.SSLError as e:
            raise InvalidArgument(f"--cluster-store-cert {tls.cert}: not a PEM certificate "
                                  f"with its key {tls.key} ({e.reason or e})") from None


def _raise_file_limit() -> None:
    """Every sandbox on a user-defined network holds two DNS sockets in the daemon: 1,000
    sandboxes need more than the usual soft limit of 1,024 files. Take the hard limit,
    as dockerd's service does (LimitNOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 8192:
        log.warning("open-file limit is %d: cnmd needs about 2 per sandbox on a "
                    "user-defined network", hard)


def _lock_state(state_dir: str) -> int:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InvalidArgument(f"another cnmd already uses the state dir {state_dir}") from None
    return fd


def _lock_netns(path: str | None) -> int:
    """One daemon per host namespace: reconcile removes cnm links it does not know, so a
    second daemon on the same namespace would tear down the first one's network. The lock
    is on the namespace itself (every path to it shares the nsfs inode)."""
    target = path or "/proc/self/ns/net"
    fd = os.open(target, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InvalidArgument(
            f"another cnmd already manages the network namespace {path or '(own)'}"
        ) from None
    return fd


def run(argv: Sequence[str] | None = None) -> int:
    try:
        args = service.load_config(parser(), list(sys.argv[1:] if argv is None else argv))
    except CnmError as e:
        print(f"cnmd: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return exit_code(e)
    service.setup_logging("debug" if args.debug else args.log_level, args.log_format)
    # The kernel hands a process's SIGTERM to any of its threads; Python runs the handler
    # on the main thread only when that thread next runs bytecode. Blocked in
    # Event.wait() (a lock wait no other thread's signal interrupts) it never did, and
    # cnmd ran on until SIGKILL (a CI run of tests/netns/test_dns.py). So the main thread
    # sleeps in short steps and the handler only sets a flag.
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _raise_file_limit()
    try:
        config = config_from(args)
        cluster = cluster_from(args)
        lock = _lock_state(config.state_dir)
        # Before reconcile: a daemon already serving this socket may manage this very
        # namespace, and reconcile would delete its links as stale; and a TLS mistake
        # stops the start before anything changed.
        tls = (TlsFiles(args.tlscacert, args.tlscert, args.tlskey)
               if args.tlscacert and args.tlscert and args.tlskey else None)
        listeners = listen.plan(args.host, f"unix://{os.path.join(config.run_dir, 'cnm.sock')}",
                                tlsverify=args.tlsverify, tls=tls, group=args.group)
        plugin_path = None if args.docker_plugin == "none" else os.path.abspath(
            args.docker_plugin)
        if plugin_path is not None:
            claim_socket(plugin_path)
        ns_lock = _lock_netns(config.host_netns)
        drivers = Drivers(builtin(), os.path.abspath(args.plugin_dir), own=plugin_path)
        # Reconciles (and, in a cluster, resyncs from the store) before it serves.
        stack = wiring.build(config, upstreams=args.dns, cluster=cluster, drivers=drivers)
        # Listening only after reconcile: a client that connects sees a consistent daemon.
        listeners.start(stack.controller)
        plugin = None
        if plugin_path is not None:
            from cnm.docker.plugin import DockerPlugin
            from cnm.docker.server import serve as serve_plugin

            plugin = serve_plugin(DockerPlugin(stack.controller), plugin_path)
    except CnmError as e:
        print(f"cnmd: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return exit_code(e)
    if plugin is not None:
        threading.Thread(target=plugin.serve_forever, name="cnm-docker", daemon=True).start()
        log.info("Docker plugin 'cnm' (NetworkDriver, IpamDriver) on %s", plugin_path)
    log.info("cnmd %s ready on %s (host namespace: %s)", __version__, listeners,
             config.host_netns or "own")
    service.notify("READY=1")  # reconciled and listening: systemd's Type=notify
    while not stopping:
        time.sleep(0.2)  # a signal's handler runs between the sleeps
    service.notify("STOPPING=1")
    log.info("stopping; networks and sandboxes stay as they are")
    listeners.close()
    if plugin is not None and plugin_path is not None:
        plugin.shutdown()
        plugin.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(plugin_path)
    stack.close()  # under the core's lock: no mutation is cut in half
    os.close(ns_lock)
    os.close(lock)
    return 0


def main() -> None:
    sys.exit(run())
