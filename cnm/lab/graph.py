"""A lab as a graphviz DOT graph: hosts, switches, links, networks, sandboxes and their
addresses. The text depends on the file only (deterministic); `dot` renders svg/png."""

from __future__ import annotations

import subprocess

from cnm.errors import CnmError, InvalidArgument
from cnm.lab import model as m


def _q(text: str) -> str:
    """A DOT string; a newline becomes DOT's centred line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def dot(lab: m.Lab) -> str:
    out = [f"graph {_q(lab.name)} {{",
           f"  label={_q(lab.title or lab.name)}; labelloc=t; fontname=Helvetica;",
           "  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9];"]
    for h in lab.hosts:
        out.append(f"  subgraph {_q('cluster_' + h.name)} {{")
        runs = [x for x, on in (("cnmd", h.cnmd), ("dockerd", h.docker),
                                ("etcd", lab.cluster is not None
                                 and h.name in lab.cluster.members)) if on]
        kind = f"host ({', '.join(runs)})" if h.cnmd else "namespace"
        out.append(f"    label={_q(h.name + ' — ' + kind)}; style=rounded;")
        out.append(f"    {_q(h.name)} [shape=box3d, label={_q(h.name)}];")
        for net in lab.networks:
            if h.name in net.hosts:
                parts = [net.name, net.driver, *net.subnets]
                if net.internal:
                    parts.append("internal")
                parts += [f"{k}={v}" for k, v in sorted(net.options.items())]
                out.append(f"    {_q(h.name + '/' + net.name)} [shape=ellipse, "
                           f"label={_q(chr(10).join(parts))}];")
        for sb in lab.sandboxes:
            if sb.host == h.name:
                extra = [f"docker {sb.docker}"] if sb.docker else []
                extra += [f"serve {s.proto}/{s.port}" for s in sb.serve]
                extra += [f"-p {p}" for p in sb.ports]
                out.append(f"    {_q(h.name + '/' + sb.name)} [shape=component, "
                           f"label={_q(chr(10).join([sb.name, *extra]))}];")
        out.append("  }")
    for sw in lab.switches:
        out.append(f"  {_q(sw.name)} [shape=hexagon, label="
                   f"{_q(sw.name + (chr(10) + 'hairpin' if sw.hairpin else ''))}];")
    for lk in lab.links:
        ea, eb = lk.ends
        lines = [f"{ea.ifname} {' '.join(ea.addresses)}".strip(),
                 f"{eb.ifname} {' '.join(eb.addresses)}".strip()]
        if lk.mtu:
            lines.append(f"mtu {lk.mtu}")
        out.append(f"  {_q(ea.node)} -- {_q(eb.node)} [label={_q(chr(10).join(lines))}, "
                   "penwidth=2];")
    for sb in lab.sandboxes:
        for a in sb.attachments:
            if a.network in ("host", "none"):
                target = sb.host
                label = a.network
            else:
                target = sb.host + "/" + a.network
                label = " ".join(x for x in (a.ip, a.ip6, *(f"alias {al}" for al in a.aliases),
                                             a.ifname) if x)
            if a.network == "bridge":
                continue
            out.append(f"  {_q(sb.host + '/' + sb.name)} -- {_q(target)} "
                       f"[label={_q(label)}];")
        if sb.attachments[0].network == "bridge":
            out.append(f"  {_q(sb.host + '/' + sb.name)} -- {_q(sb.host)} "
                       f"[label={_q('default bridge')}, style=dashed];")
    out.append("}")
    return "\n".join(out) + "\n"


def render(lab: m.Lab, output: str) -> None:
    """Write the graph to ``output``: .dot (the source), .svg or .png (through `dot`)."""
    fmt = output.rsplit(".", 1)[-1].lower() if "." in output else ""
    text = dot(lab)
    if fmt == "dot":
        with open(output, "w") as f:
            f.write(text)
        return
    if fmt not in ("svg", "png"):
        raise InvalidArgument(f"cannot tell the format of {output!r}: end it in .svg, .png "
                              "or .dot")
    try:
        r = subprocess.run(["dot", f"-T{fmt}", "-o", output], input=text.encode(),
                           capture_output=True, timeout=60)
    except FileNotFoundError:
        raise CnmError("graphviz's dot is not installed", hint="apt-get install graphviz "
                       "(or write .dot and render it elsewhere)") from None
    if r.returncode != 0:
        raise CnmError(f"dot failed: {r.stderr.decode(errors='replace').strip()}")
