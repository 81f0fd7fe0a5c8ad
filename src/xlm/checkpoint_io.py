"""Checkpoints that resume exactly and never execute code when read.

A checkpoint is a directory::

    model.safetensors        weights of each module (``{name}.safetensors``)
    model.json               what is needed to rebuild the model (sizes, languages, vocabulary settings)
    vocab.json, merges.txt   the vocabulary, so that the checkpoint is self-contained
    train_state.safetensors  optimizer tensors and RNG states (training checkpoints only)
    train_state.json         step, scheduler, sampler positions, metrics, config (training only)
    manifest.json            format version and the sha256 of every file above (written last)

It is written under a temporary name in the same folder and renamed when complete, so a
crash leaves either the previous checkpoint or the new one, never half of one.

Ground floor: the files of a checkpoint (safetensors, manifest, checksums, atomic
replacement), used by the model, training, evaluation and interop layers alike; what a
training checkpoint holds beyond weights (optimizer, sampler, RNG) is ``xlm.training``'s.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from xlm import fileio
from xlm.errors import CheckpointError
from xlm.fileio import replace_directory, write_json

FORMAT_NAME = "xlm-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_for_saving(module: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies, without the DDP/compile prefixes."""
    module = getattr(module, "module", module)
    module = getattr(module, "_orig_mod", module)
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(
    directory: Path, write_files: Callable[[Path], None], metadata: dict[str, Any] | None = None
) -> Path:
    """Create ``directory`` atomically: ``write_files(tmp)`` fills a temporary folder, the
    manifest with checksums is added, and the folder is renamed into place."""

    def fill(tmp: Path) -> None:
        write_files(tmp)
        files = {}
        for p in sorted(tmp.iterdir()):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
                files[p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "files": files, **(metadata or {})}
        write_json(tmp / MANIFEST, manifest)
        with open(tmp / MANIFEST, "rb") as f:
            os.fsync(f.fileno())

    try:
        return replace_directory(directory, fill)
    except OSError as e:  # e.g. disk full
        raise CheckpointError(
            f"{directory}: could not write the checkpoint ({e}); previous checkpoints are untouched"
        ) from e


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    """A hard link (the file is never modified in place, only replaced), or a copy where the
    filesystem has none."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def add_file_to_checkpoint(directory: Path, name: str, data: bytes) -> Path:
    """Add (or replace) the file ``name`` of an existing checkpoint and list it in the
    manifest, atomically: the checkpoint is verified first, then a sibling copy (hard links
    to the unchanged files) gets the new file and manifest and is renamed into place, as in
    :func:`save_checkpoint`. On failure the checkpoint is unchanged. Returns the file's path."""
    directory = Path(directory)
    if name == MANIFEST or not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"{name!r}: not a checkpoint file name")
    manifest = verify_checkpoint(directory)

    def fill(tmp: Path) -> None:
        for p in sorted(directory.iterdir()):
            if p.name in (name, MANIFEST):
                continue
            if p.is_dir():
                shutil.copytree(p, tmp / p.name, copy_function=_link_or_copy)
            else:
                _link_or_copy(p, tmp / p.name)
        with open(tmp / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        files = dict(manifest.get("files", {}))
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        write_json(tmp / MANIFEST, {**manifest, "files": files})
        with open(tmp / MANIFEST, "rb") as f:
            os.fsync(f.fileno())

    try:
        replace_directory(directory, fill)
    except OSError as e:  # e.g. disk full
        raise CheckpointError(f"{directory}: could not add {name} ({e}); the checkpoint is unchanged") from e
    return directory / name


def remove_stale_temporaries(folder: Path, log: Callable[[str], None] = fileio.status) -> None:
    """Clean up after a process killed inside :func:`save_checkpoint`: delete the half-written
    ``.NAME.tmp-*`` folders, and put back a ``.NAME.old-*`` folder whose replacement never
    arrived (killed between the two renames of an in-place overwrite). Call it only while no
    other process writes checkpoints in ``folder``."""
    if not Path(folder).is_dir():
        return
    for p in sorted(Path(folder).iterdir()):
        if not (p.is_dir() and p.name.startswith(".")):
            continue
        if ".tmp-" in p.name:
            log(f"removing {p}: an unfinished checkpoint left by an interrupted run")
            shutil.rmtree(p, ignore_errors=True)
        elif ".old-" in p.name:
            target = p.parent / p.name[1:].rsplit(".old-", 1)[0]
            if target.exists():
                shutil.rmtree(p, ignore_errors=True)
            else:
                log(f"restoring {target} from {p.name}: its replacement was interrupted")
                os.replace(p, target)


def verify_checkpoint(directory: Path) -> dict[str, Any]:
    """Check format and checksums; returns the manifest or raises CheckpointError naming the file."""
    directory = Path(directory)
    mpath = directory / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {MANIFEST}; incomplete or not written by xlm)")
    manifest = fileio.read_json(mpath, CheckpointError, "corrupt manifest")
    if manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{mpath}: unknown checkpoint format {manifest.get('format')!r}")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{mpath}: checkpoint format version {manifest.get('version')} is newer than this xlm ({FORMAT_VERSION})"
        )
    for name, info in manifest.get("files", {}).items():
        p = directory / name
        if not p.is_file():
            raise CheckpointError(f"{p}: missing from checkpoint")
        if p.stat().st_size != info["bytes"]:
            raise CheckpointError(f"{p}: size {p.stat().st_size} bytes, expected {info['bytes']} (truncated?)")
        if sha256_file(p) != info["sha256"]:
            raise CheckpointError(f"{p}: checksum mismatch (the file was altered or corrupted)")
    return manifest


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read tensors: {e}") from None


def read_json(path: Path) -> Any:
    try:
        return fileio.read_json(path, CheckpointError, "not valid JSON")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint directories ``step-NNNNNNNN`` in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest_intact(folder: Path, log: Callable[[str], None] = fileio.status) -> Path | None:
    """The newest checkpoint whose checksums verify; corrupt newer ones are reported and skipped."""
    for ckpt in reversed(list_checkpoints(folder)):
        try:
            verify_checkpoint(ckpt)
            return ckpt
        except CheckpointError as e:
            log(f"warning: skipping damaged checkpoint: {e}")
    return None


def prune_checkpoints(folder: Path, keep: int, log: Callable[[str], None] = fileio.status) -> None:
    """Keep the ``keep`` newest checkpoints, and in any case the newest intact one."""
    ckpts = list_checkpoints(folder)
    if keep <= 0 or len(ckpts) <= keep:
        return
    newest_ok = latest_intact(folder, log)
    for old in ckpts[:-keep]:
        if old != newest_ok:
            shutil.rmtree(old, ignore_errors=True)
