"""Set up and run veille with nothing but Python >= 3.11.

    python3 bootstrap.py run     # one full pass on the embedded defaults: fetch, tag, write digests/
    python3 bootstrap.py test    # the whole test suite
    python3 bootstrap.py demo    # the offline demo
    python3 bootstrap.py -- ARGS # any veille command, e.g. `-- fetch --source cert-fr`

It creates `.venv/` beside this file on first use, installs veille with its dev extras into it, and
reinstalls only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".veille-installed"


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"veille needs Python >= 3.11, this is {sys.version.split()[0]}")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print("bootstrap: creating .venv/", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("bootstrap: installing veille and its dependencies into .venv/", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(digest)


def ensure_browser() -> None:
    """The digest rendering tests drive Debian's Chromium (not on PyPI): install it when it is missing
    and this is a Debian-like machine we may administer (root, as in CI); otherwise say what to run."""
    import shutil

    if shutil.which("chromium") or os.path.exists("/usr/bin/chromium"):
        return
    packages = ["chromium", "fonts-dejavu-core"]
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("bootstrap: installing Debian chromium for the browser rendering tests", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        return
    print("bootstrap: the browser rendering tests need Debian's chromium; install it with "
          f"`sudo apt-get install {' '.join(packages)}` (those tests fail without it)", flush=True)


def main(argv: list[str]) -> int:
    ensure_venv()
    command = argv[0] if argv else "run"
    rest = argv[1:]
    if command == "test":
        ensure_browser()
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    elif command == "--":
        args = [str(BIN / "veille"), *rest]
    else:
        args = [str(BIN / "veille"), command, *rest]
    return subprocess.run(args, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
