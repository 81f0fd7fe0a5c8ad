"""Debian packages: ``apt-get download`` into a cache, ``dpkg-deb -x``, versions."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from corpus.util import log

# --------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------


def _version_cmp(a: str, b: str) -> int:
    if a == b:
        return 0
    r = subprocess.run(["dpkg", "--compare-versions", a, "lt", b])
    return -1 if r.returncode == 0 else 1


class Packages:
    """Download (``apt-get download``) and unpack (``dpkg-deb -x``) packages into a cache."""

    def __init__(self, cache: Path, offline: bool) -> None:
        self.debs = cache / "debs"
        self.root = cache / "root"
        self.debs.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self.offline = offline
        self.updated = False
        self.info: dict[str, dict] = {}

    def _download(self, name: str) -> bool:
        cmd = ["apt-get", "download", name]
        r = subprocess.run(cmd, cwd=self.debs, capture_output=True, text=True)
        if r.returncode != 0 and not self.updated:
            log(f"  apt-get download {name} failed; running apt-get update once")
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            self.updated = True
            r = subprocess.run(cmd, cwd=self.debs, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"  could not download {name}: {r.stderr.strip().splitlines()[-1:]}")
        return r.returncode == 0

    def get(self, name: str, required: bool = True) -> Path | None:
        if name in self.info:
            return self.info[name]["root"]
        debs = sorted(self.debs.glob(f"{name}_*.deb"))
        if not debs and not self.offline:
            log(f"  downloading {name}")
            self._download(name)
            debs = sorted(self.debs.glob(f"{name}_*.deb"))
        if not debs:
            if required:
                raise SystemExit(f"package {name} is not available (see SOURCES / apt-get)")
            log(f"  WARNING: package {name} unavailable, skipped")
            return None
        versions = {}
        for deb in debs:
            out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True)
            versions[deb] = out.stdout.strip()
        deb = max(debs, key=functools.cmp_to_key(lambda a, b: _version_cmp(versions[a], versions[b])))
        dest = self.root / name
        marker = dest / f".extracted-{deb.name}"
        if not marker.exists():
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
            marker.touch()
        self.info[name] = {"version": versions[deb], "deb": deb.name, "root": dest, "used_for": set()}
        return dest

    def note(self, name: str, what: str) -> None:
        if name in self.info:
            self.info[name]["used_for"].add(what)
