#!/usr/bin/env bash
# Install the peers bench/*.py run beside cnm, on a Debian 12 machine as root; idempotent.
# cnm first (scripts/install.sh), then the Debian packages of the step "bench" in
# scripts/packages.txt: containernetworking-plugins (CNI bridge, host-local, portmap,
# macvlan), podman, netavark, aardvark-dns, dnsperf, docker.io, containerd, runc, mininet,
# bridge-utils, net-tools (bench/lab.py),
# busybox-static (the image Docker runs), bind9-dnsutils, git, etcd-server and etcd-client
# (bench/overlay.py's cluster), iperf3 (bench/overlay.py's throughput); and py-spy in the
# venv (bench/dns.py --profile, bench/overlay.py --profile).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install.sh >/dev/null
bash scripts/packages.sh install bench
.venv/bin/python -m pip install -q py-spy
echo "the benchmarks' peers are installed; run: .venv/bin/python bench/run.py (see bench/README.md)"
