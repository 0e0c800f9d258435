"""A wheel of the tree, installed into a clean venv: every module of the tree is in it (an
editable install's finder hides a package missing from pyproject's list), the API document
too, and its `cnm` runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
# Where each part of the tree lands in the installed layout (pyproject's package-dir).
LAYOUT = {"cnm": "cnm", "drivers": "cnm/drivers", "dns": "cnm/dns"}


def test_a_wheel_holds_the_tree_and_installs_into_a_clean_venv(tmp_path: Path) -> None:
    # From a copy without build/ (setuptools reuses build/lib: a stale one hides a package
    # the list misses) or the venv.
    src = tmp_path / "src"
    shutil.copytree(TOP, src, ignore=shutil.ignore_patterns(
        "build", ".venv", "*.egg-info", "__pycache__", ".git", ".mypy_cache", ".ruff_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                        str(tmp_path / "wheels"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = (tmp_path / "wheels").glob("cnm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tree = {f"{LAYOUT[p.relative_to(TOP).parts[0]]}/"
            f"{'/'.join(p.relative_to(TOP).parts[1:])}"
            for top in LAYOUT for p in (TOP / top).rglob("*.py")
            if "__pycache__" not in p.parts}
    assert tree - names == set(), "modules of the tree missing from the wheel"
    assert "cnm/api/openapi.yaml" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Operating System :: POSIX :: Linux" in text and "# cnm" in text  # the README
    assert "License-Expression: Apache-2.0" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    from cnm import __version__

    out = subprocess.run([str(venv / "bin" / "cnm"), "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"cnm {__version__}"
    helped = subprocess.run([str(venv / "bin" / "cnm"), "network", "create", "--help"],
                            capture_output=True, text=True, check=True).stdout
    assert "(default: bridge)" in helped
    # The installed CLI is the wheel's, not this tree's; it needs none of the daemon's
    # dependencies (the clean venv has none).
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import cnm.cli; print(cnm.cli.__file__)"], capture_output=True,
                           text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(venv))


def test_pipx_install_of_the_tree_gives_working_cnm_and_cnmd(tmp_path: Path) -> None:
    """What the README's users of pipx run: ``pipx install .`` from a copy of the tree, with
    its dependencies, into a pipx home of its own; both commands run from there."""
    src = tmp_path / "src"
    shutil.copytree(TOP, src, ignore=shutil.ignore_patterns(
        "build", ".venv", "*.egg-info", "__pycache__", ".git", ".mypy_cache", ".ruff_cache"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    r = subprocess.run(["pipx", "install", str(src)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    bin_dir = tmp_path / "bin"
    from cnm import __version__

    out = subprocess.run([str(bin_dir / "cnm"), "--version"], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert out.strip() == f"cnm {__version__}"
    # cnmd imports the daemon side (pyroute2, dnslib, ...): it runs only if pipx installed
    # the dependencies too.
    helped = subprocess.run([str(bin_dir / "cnmd"), "--help"], capture_output=True, text=True,
                            env=env)
    assert helped.returncode == 0, helped.stderr[-1500:]
    assert "--cluster-store" in helped.stdout
