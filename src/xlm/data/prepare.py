"""``xlm prepare``: raw text files -> normalized text -> one shared BPE -> binarized splits.

The raw directory uses the original XLM naming, plain or gzip-compressed:

* ``{split}.{lang}[.gz]``            monolingual (``train.en.gz``, ``valid.fr``, ...);
* ``{split}.{a}-{b}.{lang}[.gz]``    one side of a parallel corpus (``train.en-fr.fr.gz``);

with ``split`` one of ``train``, ``valid``, ``test``. The output directory holds
``vocab.json`` + ``merges.txt`` (+ ``bpe.json``), every split binarized under the same
names (pairs always spelled in sorted order, ``en-fr``), and ``prepare.json`` — written
last, so a directory without it is an unfinished run.

Normalization (Moses, pure Python) is the slow step: it runs in ``workers`` processes
over chunks of lines, streaming into ``OUT/tmp``; BPE encoding is parallel in Rust.

``tokenizer="sentencepiece"`` (XLM-R) or ``"wordpiece"`` (mBERT) learns that kind of
vocabulary instead (:mod:`xlm.text.sentencepiece`, :mod:`xlm.text.wordpiece`) on the raw
lines, which are only decoded (those tokenizers normalize inside); the sampling is the same.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from xlm.config import Count, NonNegative, NonNegativeInt, Settings
from xlm.data.binarize import BinarizeStats, Errors, binarize, binarize_parallel, count_lines, open_binary
from xlm.data.dataset import PREPARE_FILE
from xlm.errors import DataError
from xlm.fileio import replace_directory, write_atomic, write_json
from xlm.text.bpe import BPE_INFO_FILE, learn_bpe, vocab_settings
from xlm.text.languages import check_languages
from xlm.text.normalize import Normalizer, normalize_raw_lines
from xlm.text.segment import segmenter_versions
from xlm.text.sentencepiece import SP_INFO_FILE, SpModelType, learn_sentencepiece
from xlm.text.tokenizer import Tokenizer, load_tokenizer, vocab_kind
from xlm.text.vocab import MODEL_FILES, VOCAB_FILE, VOCAB_INFO_FILE, Kind, vocabulary_files
from xlm.text.wordpiece import WP_INFO_FILE, learn_wordpiece

SPLITS = ("train", "valid", "test")
_NAME_RE = re.compile(
    r"^(?P<split>train|valid|test)\.(?:(?P<a>[a-z]{2,3})-(?P<b>[a-z]{2,3})\.)?(?P<lang>[a-z]{2,3})(?P<gz>\.gz)?$"
)
RAW_DIR = "raw"  # raw valid/test sides of the parallel corpora, the references of BLEU
PREPARE_FORMAT = "xlm-prepared"
PREPARE_VERSION = 1
# The settings that decide the content of a prepared directory (compared to skip re-runs).
SETTING_KEYS = (
    "languages", "vocab_size_requested", "vocab_source", "alpha", "bpe_sentences",
    "lowercase_and_remove_accent", "max_lines", "seed",
)  # fmt: skip


@dataclass(frozen=True)
class RawFile:
    """One input file: monolingual (``pair`` is None) or one side of a sorted ``pair``."""

    path: Path
    split: str
    lang: str
    pair: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        """The output prefix name: ``train.en`` or ``train.en-fr.fr``."""
        if self.pair is None:
            return f"{self.split}.{self.lang}"
        return f"{self.split}.{self.pair[0]}-{self.pair[1]}.{self.lang}"


class PrepareOptions(Settings):
    """How ``xlm prepare`` runs; :meth:`settings` are those that decide its output."""

    vocab_size: Count | None = None  # required unless vocab_dir is given
    langs: list[str] | None = None  # default: every language found
    alpha: NonNegative = 0.5
    bpe_sentences: Count = 1_000_000
    lowercase: bool = False
    max_lines: Count | None = None  # per file, for quick runs
    vocab_dir: Path | None = None  # reuse this vocabulary instead of learning one
    workers: Count = 2
    seed: NonNegativeInt = 0
    chunk_lines: Count = 2_000
    cache_mb: NonNegativeInt = 128  # normalized lines kept to skip repeated lines (0: no cache)
    errors: Errors = "strict"
    keep_tmp: bool = False
    allow_langs: list[str] = Field(default_factory=list)  # codes accepted although not ISO 639-1
    tokenizer: Kind = "bpe"  # the kind of vocabulary to learn: bpe (XLM), sentencepiece (XLM-R), wordpiece (mBERT)
    sp_model_type: SpModelType = "unigram"  # sentencepiece: unigram or bpe
    overwrite: bool = False  # replace a folder that holds another preparation

    def settings(self, languages: list[str]) -> dict[str, Any]:
        """What decides the content of the output (recorded in ``prepare.json``)."""
        return {
            "languages": languages,
            "vocab_size_requested": self.vocab_size,
            "vocab_source": str(self.vocab_dir) if self.vocab_dir is not None else None,
            "alpha": self.alpha,
            "bpe_sentences": self.bpe_sentences,
            "lowercase_and_remove_accent": self.lowercase,
            "max_lines": self.max_lines,
            "seed": self.seed,
            # other kinds only: a BPE run's settings (and so its resume check) are as before kinds
            **({"tokenizer": self.tokenizer} if self.tokenizer != "bpe" else {}),
            **({"sp_model_type": self.sp_model_type} if self.tokenizer == "sentencepiece" else {}),
        }


@dataclass
class PrepareResult:
    info: dict[str, Any]
    files: dict[str, BinarizeStats] = field(default_factory=dict)
    up_to_date: bool = False  # the folder already held this preparation: nothing was done


# --------------------------------------------------------------------------- discovery


def skipped_files(raw_dir: str | Path) -> list[str]:
    """Names of the files of ``raw_dir`` that are not corpus files (hidden files aside)."""
    d = Path(raw_dir)
    return [
        p.name for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".") and not _NAME_RE.match(p.name)
    ]


def discover(raw_dir: str | Path, langs: list[str] | None = None) -> list[RawFile]:
    """Find the corpus files of ``raw_dir`` (restricted to ``langs`` when given)."""
    d = Path(raw_dir)
    if not d.is_dir():
        raise DataError(f"{d}: corpus directory not found")
    wanted = set(langs) if langs else None
    found: dict[str, RawFile] = {}
    for p in sorted(d.iterdir()):
        m = _NAME_RE.match(p.name)
        if not m or not p.is_file():
            continue
        split, lang, a, b = m["split"], m["lang"], m["a"], m["b"]
        pair: tuple[str, str] | None = None
        if a is not None:
            if a == b or lang not in (a, b):
                raise DataError(f"{p}: a parallel file must be named {{split}}.{{a}}-{{b}}.{{a or b}}, a != b")
            pair = (min(a, b), max(a, b))
            if wanted is not None and not set(pair) <= wanted:
                continue
        elif wanted is not None and lang not in wanted:
            continue
        rf = RawFile(p, split, lang, pair)
        if rf.name in found:
            raise DataError(f"{found[rf.name].path} and {p} are the same split; keep only one of them")
        found[rf.name] = rf
    files = list(found.values())
    sides = collections.Counter((f.split, f.pair) for f in files if f.pair)
    for (split, pair), n in sides.items():
        if n != 2:
            raise DataError(f"{d}: {split}.{pair[0]}-{pair[1]} has only one side (need both .{pair[0]} and .{pair[1]})")
    if wanted is not None:
        missing = wanted - {f.lang for f in files}
        if missing:
            raise DataError(f"{d}: no files for language(s) {', '.join(sorted(missing))}")
    if not files:
        raise DataError(f"{d}: no corpus files named like train.en[.gz] or train.en-fr.fr[.gz]")
    return files


def _pairs(files: list[RawFile]) -> list[tuple[RawFile, RawFile]]:
    by_key: dict[tuple[str, tuple[str, str]], dict[str, RawFile]] = collections.defaultdict(dict)
    for f in files:
        if f.pair:
            by_key[(f.split, f.pair)][f.lang] = f
    return [(sides[pair[0]], sides[pair[1]]) for (_, pair), sides in sorted(by_key.items())]


def check_parallel(files: list[RawFile]) -> None:
    """Both sides of every parallel corpus must have the same number of lines."""
    for a, b in _pairs(files):
        na, nb = count_lines(a.path), count_lines(b.path)
        if na != nb:
            raise DataError(f"parallel files are not aligned: {a.path} has {na} lines but {b.path} has {nb}")


# --------------------------------------------------------------------------- normalization


class LineCache:
    """Normalized text of raw lines already seen, per language, within a byte budget.

    Corpora in the XLM layout repeat many lines (the English side of every ``en-xx`` pair,
    valid/test sets that are also parallel sides): each distinct line is normalized once.
    The oldest entries are dropped first when the budget is exceeded, so memory stays bounded.
    """

    ENTRY_OVERHEAD = 160  # bytes of Python objects per entry, roughly

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.n_bytes = 0
        self.hits = 0
        self._data: dict[tuple[str, bytes], str] = {}

    def get(self, lang: str, raw: bytes) -> str | None:
        value = self._data.get((lang, raw))
        if value is not None:
            self.hits += 1
        return value

    def put(self, lang: str, raw: bytes, value: str) -> None:
        if self.max_bytes <= 0 or (lang, raw) in self._data:
            return
        self._data[(lang, raw)] = value
        self.n_bytes += len(raw) + len(value) + self.ENTRY_OVERHEAD
        while self.n_bytes > self.max_bytes and self._data:
            (old_lang, old_raw), old = next(iter(self._data.items()))
            del self._data[(old_lang, old_raw)]
            self.n_bytes -= len(old_raw) + len(old) + self.ENTRY_OVERHEAD


@dataclass
class _Chunk:
    """Lines of one file on their way through the workers: cached ones filled in already."""

    file_index: int
    lang: str
    out: list[str | None]
    misses: dict[bytes, list[int]]  # distinct raw line -> positions in ``out``


def _raw_chunks(f: RawFile, chunk_lines: int, max_lines: int | None) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, raw lines without their newline) chunks of a file, streaming."""
    chunk: list[bytes] = []
    first = 1
    with open_binary(f.path) as fh:
        for n, raw in enumerate(fh, 1):
            if max_lines is not None and n > max_lines:
                break
            chunk.append(raw.rstrip(b"\n"))
            if len(chunk) == chunk_lines:
                yield first, chunk
                first, chunk = n + 1, []
    if chunk:
        yield first, chunk


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def normalize_files(files: list[RawFile], tmp_dir: Path, opts: PrepareOptions) -> dict[str, Path]:
    """Normalize every file to ``tmp_dir/{name}.tok`` (one line out per line in).

    Chunks of all files go through one pool of ``opts.workers`` processes, at most
    ``2 * workers`` chunks in flight, results written in order; lines seen before are
    taken from a :class:`LineCache`. Memory stays bounded.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    outputs = {f.name: tmp_dir / f"{f.name}.tok" for f in files}
    keep_raw = opts.tokenizer != "bpe"  # SentencePiece and WordPiece read raw text (they normalize inside)
    for f in files:  # build (and validate) the normalizers before starting workers
        if not keep_raw:
            Normalizer(f.lang, opts.lowercase)
    cache = LineCache(opts.cache_mb * 1_000_000)
    chunks = _chunks_to_normalize(files, opts, cache, keep_raw)
    writer = _ChunkWriter([outputs[f.name] for f in files], cache)
    try:
        for f in files:  # every file gets an output, even an empty one
            outputs[f.name].write_bytes(b"")
        if opts.workers <= 1:
            for chunk, task in chunks:
                writer.write(chunk, normalize_raw_lines(*task) if task else [])
        else:
            _normalize_in_pool(chunks, writer.write, opts.workers)
    finally:
        writer.close()
    return outputs


def _chunks_to_normalize(
    files: list[RawFile], opts: PrepareOptions, cache: LineCache, keep_raw: bool
) -> Iterator[tuple[_Chunk, tuple[Any, ...] | None]]:
    """Each chunk of every file, with the worker task for its lines missing from the cache (or
    None; with ``keep_raw`` the task only checks the text). Lazy: the cache is consulted as chunks
    are asked for, after earlier ones were written."""
    for i, f in enumerate(files):
        for first, raw_lines in _raw_chunks(f, opts.chunk_lines, opts.max_lines):
            chunk = _Chunk(i, f.lang, [], {})
            numbers: list[int] = []
            for k, raw in enumerate(raw_lines):
                hit = cache.get(f.lang, raw)
                chunk.out.append(hit)
                if hit is None:
                    if raw not in chunk.misses:
                        numbers.append(first + k)
                    chunk.misses.setdefault(raw, []).append(k)
            task = (f.lang, opts.lowercase, list(chunk.misses), str(f.path), numbers, opts.errors, keep_raw)
            yield chunk, task if chunk.misses else None


class _ChunkWriter:
    """Writes normalized chunks, which come in file order, to their files' outputs (one open
    at a time), and puts the newly normalized lines in the cache."""

    def __init__(self, outputs: list[Path], cache: LineCache) -> None:
        self.outputs, self.cache = outputs, cache
        self.handles: dict[int, Any] = {}

    def write(self, chunk: _Chunk, results: list[str]) -> None:
        for raw, text in zip(chunk.misses, results):
            self.cache.put(chunk.lang, raw, text)
            for k in chunk.misses[raw]:
                chunk.out[k] = text
        i = chunk.file_index
        if i not in self.handles:  # files come in order: close the previous one
            self.close()
            self.handles[i] = open(self.outputs[i], "w", encoding="utf-8", newline="\n")
        self.handles[i].writelines(f"{line}\n" for line in chunk.out)

    def close(self) -> None:
        for h in self.handles.values():
            h.close()
        self.handles.clear()


def _normalize_in_pool(
    chunks: Iterable[tuple[_Chunk, tuple[Any, ...] | None]],
    write: Callable[[_Chunk, list[str]], None],
    workers: int,
) -> None:
    """Normalize the chunks' tasks in ``workers`` processes, at most ``2 * workers`` chunks in
    flight, and ``write`` each chunk with its results in order."""
    # spawn: no fork of a process with Rust/torch threads; an executor (unlike Pool) raises
    # BrokenProcessPool instead of waiting forever when a worker dies (e.g. killed for memory)
    ctx = multiprocessing.get_context("spawn")
    # Ctrl-C reaches the whole process group: the workers ignore it, this process stops them
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint) as pool:
        pending: collections.deque[tuple[_Chunk, Any]] = collections.deque()
        try:
            for chunk, task in chunks:
                pending.append((chunk, pool.submit(normalize_raw_lines, *task) if task else None))
                while len(pending) >= 2 * workers or (pending and pending[0][1] is None):
                    done, res = pending.popleft()
                    write(done, res.result() if res is not None else [])
            while pending:
                done, res = pending.popleft()
                write(done, res.result() if res is not None else [])
        except BaseException:  # an error or Ctrl-C: drop the queued chunks, do not wait for them
            pool.shutdown(wait=True, cancel_futures=True)
            raise


# --------------------------------------------------------------------------- vocabulary


def _bpe_sources(files: list[RawFile], tok: dict[str, Path], languages: list[str]) -> dict[str, list[Path]]:
    """Per language, the monolingual train file, or else its parallel train sides."""
    sources: dict[str, list[Path]] = {}
    for lang in languages:
        mono = [tok[f.name] for f in files if f.split == "train" and f.lang == lang and f.pair is None]
        para = [tok[f.name] for f in files if f.split == "train" and f.lang == lang and f.pair is not None]
        if mono or para:
            sources[lang] = mono or para
    if not sources:
        raise DataError("no train files to learn the BPE vocabulary from (or pass --vocab DIR)")
    return sources


def _reuse_vocabulary(vocab_dir: Path, out_dir: Path, lowercase: bool) -> None:
    kind = vocab_kind(vocab_dir)
    for name in (VOCAB_FILE, MODEL_FILES[kind]):
        if not (vocab_dir / name).is_file():
            raise DataError(
                f"{vocab_dir / name}: not found (--vocab must name a directory with {VOCAB_FILE} and {MODEL_FILES[kind]})"
            )
    recorded = vocab_settings(vocab_dir).get("lowercase_and_remove_accent")
    if recorded is not None and bool(recorded) != lowercase:
        raise DataError(
            f"{vocab_dir}: the vocabulary was learned with lowercase_and_remove_accent={recorded}; "
            f"prepare with the same setting ({'--lowercase' if recorded else 'without --lowercase'})"
        )
    if vocab_dir.resolve() != out_dir.resolve():
        (out_dir / VOCAB_INFO_FILE).unlink(missing_ok=True)  # a previous run's kind must not linger
        for name in (VOCAB_FILE, MODEL_FILES[kind], BPE_INFO_FILE, VOCAB_INFO_FILE, SP_INFO_FILE, WP_INFO_FILE):
            if (vocab_dir / name).is_file():
                shutil.copyfile(vocab_dir / name, out_dir / name)


# --------------------------------------------------------------------------- the whole run


def fingerprint(files: list[RawFile], languages: list[str], opts: PrepareOptions) -> dict[str, Any]:
    """What decides the content of a prepared folder: the settings, the format version, the
    reused vocabulary's hash, and every input file's name, size and sha256."""
    vocab_hash = None
    if opts.vocab_dir is not None:
        d = Path(opts.vocab_dir)
        vocab_hash = _sha256_files([d / name for name in vocabulary_files(d)])  # BPE: vocab.json, merges.txt
    inputs = {f.path.name: {"bytes": f.path.stat().st_size, "sha256": _sha256_files([f.path])} for f in files}
    settings = {**opts.settings(languages), "invalid_utf8": opts.errors, "vocab_source_hash": vocab_hash}
    return {"version": PREPARE_VERSION, "settings": settings, "inputs": inputs}


def _sha256_files(paths: list[Path]) -> str | None:
    h = hashlib.sha256()
    for p in paths:
        if not p.is_file():
            return None
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between two fingerprints, in words."""
    if not isinstance(old, dict) or not old:
        return ["it was prepared by an older xlm that recorded no fingerprint"]
    out = [
        f"{k}: {v!r} -> {new['settings'][k]!r}"
        for k, v in old.get("settings", {}).items()
        if new["settings"].get(k) != v
    ]
    old_in, new_in = old.get("inputs", {}), new["inputs"]
    out += [f"input {n} changed" for n in sorted(set(old_in) & set(new_in)) if old_in[n] != new_in[n]]
    out += [f"input {n} is new" for n in sorted(set(new_in) - set(old_in))]
    out += [f"input {n} is gone" for n in sorted(set(old_in) - set(new_in))]
    if old.get("version") != new["version"]:
        out.append(f"format version {old.get('version')} -> {new['version']}")
    return out or ["the recorded settings differ"]


def check_existing_output(out_dir: Path, print_: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The ``prepare.json`` of ``out_dir`` when it already holds exactly this preparation (then
    nothing needs doing); None when ``out_dir`` may be (re)written; otherwise a DataError: a
    prepared folder is replaced only with ``--overwrite``, a folder of other files never."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, not a folder")
    marker = out_dir / PREPARE_FILE
    if not marker.is_file():
        if any(out_dir.iterdir()):
            raise DataError(
                f"{out_dir}: not empty and holds no {PREPARE_FILE} (not a folder written by xlm prepare, or an "
                "unfinished one): choose another output folder, or delete it first"
            )
        return None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        old = info.get("fingerprint", {}) if isinstance(info, dict) else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        info, old = {}, {}
    if old == print_:
        return info
    if not overwrite:
        raise DataError(
            f"{out_dir} already holds prepared data made otherwise ({'; '.join(_differences(old, print_))}); models "
            "trained on it need it as it is: pass --overwrite to replace it, or choose another output folder"
        )
    return None


def prepare(
    raw_dir: str | Path, out_dir: str | Path, opts: PrepareOptions, log: Callable[[str], None] = print
) -> PrepareResult:
    """Prepare ``raw_dir`` into ``out_dir``, built in a temporary sibling folder and renamed into
    place when complete: a failure or an interrupt leaves ``out_dir`` as it was. A folder that
    already holds this very preparation (same settings, same input bytes) is left untouched."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if opts.vocab_dir is None and opts.vocab_size is None:
        raise DataError("give --vocab-size N to learn a vocabulary, or --vocab DIR to reuse one")
    if opts.vocab_dir is not None:  # the reused vocabulary decides the kind (and so the normalization)
        load_tokenizer(opts.vocab_dir)  # a broken vocabulary is an error before anything is written
        opts = opts.model_copy(update={"tokenizer": vocab_kind(opts.vocab_dir)})
    if opts.tokenizer == "sentencepiece" and opts.lowercase:
        raise DataError("--lowercase: a SentencePiece vocabulary keeps case and accents (XLM-R's); drop the option")
    t_start = time.perf_counter()
    files = discover(raw_dir, opts.langs)
    languages = opts.langs or sorted({f.lang for f in files})
    skipped = skipped_files(raw_dir)
    if skipped:
        log(
            f"skipped {len(skipped)} file(s) of {raw_dir} not named {{split}}.{{lang}}[.gz] or "
            f"{{split}}.{{a}}-{{b}}.{{lang}}[.gz] ({{split}}: train, valid, test): {', '.join(skipped)}"
        )
    check_languages(languages, opts.allow_langs, str(raw_dir))
    if raw_dir.resolve() == out_dir.resolve() or out_dir.resolve() in raw_dir.resolve().parents:
        raise DataError(f"{out_dir}: the output folder would replace the corpus folder {raw_dir}")
    print_ = fingerprint(files, languages, opts)
    done = check_existing_output(out_dir, print_, opts.overwrite)
    if done is not None:
        log(f"{out_dir} is up to date: prepared with the same settings from the same input files")
        return PrepareResult(done, up_to_date=True)
    check_parallel(files)
    result: list[tuple[dict[str, Any], dict[str, BinarizeStats]]] = []

    def fill(tmp_out: Path) -> None:
        tmp_dir = tmp_out / "tmp"
        try:
            info, stats = _run(files, languages, tmp_out, tmp_dir, opts, log)
        finally:
            if not opts.keep_tmp:
                shutil.rmtree(tmp_dir, ignore_errors=True)
        info["raw_dir"] = str(raw_dir)
        info["fingerprint"] = print_
        info["timings"]["total_s"] = round(time.perf_counter() - t_start, 2)
        write_json(tmp_out / PREPARE_FILE, info, sort_keys=False, ensure_ascii=False)
        result.append((info, stats))

    replace_directory(out_dir, fill)
    info, stats = result[0]
    return PrepareResult(info, stats)


def _run(
    files: list[RawFile],
    languages: list[str],
    out_dir: Path,
    tmp_dir: Path,
    opts: PrepareOptions,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, BinarizeStats]]:
    """Normalize, learn (or copy) the vocabulary, binarize: everything but the commit marker."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    log(f"normalizing {len(files)} files ({', '.join(languages)}) with {opts.workers} worker(s) ...")
    tok = normalize_files(files, tmp_dir, opts)
    timings["normalize_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bpe_info = _make_vocabulary(files, tok, languages, out_dir, opts, log)
    timings["bpe_s"] = time.perf_counter() - t0
    tokenizer = load_tokenizer(out_dir)

    t0 = time.perf_counter()
    log(f"binarizing with a vocabulary of {len(tokenizer)} tokens ...")
    stats = _binarize_files(files, tok, out_dir, tokenizer, chunk_lines=opts.chunk_lines * 5)
    timings["binarize_s"] = time.perf_counter() - t0
    raw_refs = keep_raw_references(_pairs(files), tok, out_dir, opts.max_lines)

    info: dict[str, Any] = {
        "format": PREPARE_FORMAT,
        "version": PREPARE_VERSION,
        **opts.settings(languages),
        "vocab_size": len(tokenizer),
        "vocab_hash": tokenizer.vocab.hash,
        **({"vocab_kind": tokenizer.vocab.kind} if tokenizer.vocab.kind != "bpe" else {}),
        "n_merges": tokenizer.n_merges,
        "bpe": bpe_info,
        "segmenters": segmenter_versions(languages),  # zh/ja/th: which word segmenter, which version
        "inputs": input_fingerprint(files),
        "workers": opts.workers,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "raw_references": raw_refs,
        "files": {
            f.name: {"split": f.split, "pair": "-".join(f.pair) if f.pair else None, **stats[f.name].to_json()}
            for f in files
        },
    }
    return info, stats


def _make_vocabulary(
    files: list[RawFile],
    tok: dict[str, Path],
    languages: list[str],
    out_dir: Path,
    opts: PrepareOptions,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Learn the vocabulary on the normalized files ``tok`` (or copy ``opts.vocab_dir``'s) into
    ``out_dir``; returns what ``prepare.json`` records of it."""
    if opts.vocab_dir is not None:
        _reuse_vocabulary(Path(opts.vocab_dir), out_dir, opts.lowercase)
        return {"reused_from": str(opts.vocab_dir)}
    if opts.vocab_size is None:
        raise DataError("give --vocab-size N to learn a vocabulary, or --vocab DIR to reuse one")
    sources = _bpe_sources(files, tok, languages)
    (out_dir / VOCAB_INFO_FILE).unlink(missing_ok=True)  # a previous run's kind must not linger
    what = {"bpe": "BPE", "sentencepiece": f"SentencePiece ({opts.sp_model_type})", "wordpiece": "WordPiece"}
    log(f"learning a shared {what[opts.tokenizer]} of {opts.vocab_size} tokens on α={opts.alpha}-sampled sentences ...")
    if opts.tokenizer == "sentencepiece":
        report = learn_sentencepiece(
            sources, out_dir, opts.vocab_size, opts.alpha, opts.bpe_sentences, opts.seed, opts.sp_model_type
        )
    elif opts.tokenizer == "wordpiece":
        report = learn_wordpiece(
            sources, out_dir, opts.vocab_size, opts.alpha, opts.bpe_sentences, opts.seed, opts.lowercase
        )
    else:
        report = learn_bpe(sources, out_dir, opts.vocab_size, opts.alpha, opts.bpe_sentences, opts.seed, opts.lowercase)
    return {"n_merges": report.n_merges, "line_counts": report.line_counts, "sample_sizes": report.sample_sizes}


def _binarize_files(
    files: list[RawFile], tok: dict[str, Path], out_dir: Path, tokenizer: Tokenizer, chunk_lines: int
) -> dict[str, BinarizeStats]:
    """Binarize each normalized file ``tok[name]`` to ``out_dir/name`` (the two sides of a pair
    together); the statistics of each file."""
    stats: dict[str, BinarizeStats] = {}
    for f in files:
        if f.pair is None:
            stats[f.name] = binarize(
                tok[f.name], out_dir / f.name, tokenizer, f.lang, chunk_lines=chunk_lines, source=str(f.path)
            )
    for a, b in _pairs(files):
        sa, sb = binarize_parallel(
            tok[a.name], tok[b.name], out_dir / a.name, out_dir / b.name, tokenizer, a.lang, b.lang,
            chunk_lines=chunk_lines, sources=(str(a.path), str(b.path)),
        )  # fmt: skip
        stats[a.name], stats[b.name] = sa, sb
    return stats


def keep_raw_references(
    pairs: list[tuple[RawFile, RawFile]], tok: dict[str, Path], out_dir: Path, max_lines: int | None
) -> list[str]:
    """Copy the raw text of both sides of every valid/test pair to ``OUT/raw/{name}``, keeping
    exactly the pairs that were binarized (both sides non-empty once normalized), so line i
    is the reference of sentence i. BLEU scores detokenized outputs against these."""
    raw_dir = out_dir / RAW_DIR
    shutil.rmtree(raw_dir, ignore_errors=True)
    written: list[str] = []
    for a, b in pairs:
        if a.split == "train":
            continue
        raw_dir.mkdir(exist_ok=True)
        kept: tuple[list[str], list[str]] = ([], [])
        with open_binary(a.path) as ra, open_binary(b.path) as rb, \
                open(tok[a.name], encoding="utf-8", newline="\n") as ta, \
                open(tok[b.name], encoding="utf-8", newline="\n") as tb:  # fmt: skip
            for n, (raw_a, raw_b, norm_a, norm_b) in enumerate(zip(ra, rb, ta, tb), 1):
                if max_lines is not None and n > max_lines:
                    break
                if norm_a.strip() and norm_b.strip():
                    kept[0].append(raw_a.rstrip(b"\r\n").decode("utf-8", errors="replace") + "\n")
                    kept[1].append(raw_b.rstrip(b"\r\n").decode("utf-8", errors="replace") + "\n")
        for f, lines in zip((a, b), kept):
            write_atomic(raw_dir / f.name, "".join(lines))
            written.append(f"{RAW_DIR}/{f.name}")
    return written


# --------------------------------------------------------------------------- reporting


def language_table(info: dict[str, Any]) -> str:
    """Per-language totals over all files of a ``prepare.json``: a plain-text table."""
    rows: dict[str, list[int]] = {}
    for entry in info["files"].values():
        r = rows.setdefault(entry["lang"], [0, 0, 0, 0, 0])
        r[0] += 1
        r[1] += entry["n_sentences"]
        r[2] += entry["n_tokens"]
        r[3] += entry["n_unk"]
        r[4] += entry["n_skipped"]
    lines = [f"{'lang':<6}{'files':>6}{'sentences':>12}{'tokens':>13}{'unk%':>9}{'skipped':>9}"]
    total = [0, 0, 0, 0, 0]
    for lang in sorted(rows):
        r = rows[lang]
        total = [t + x for t, x in zip(total, r)]
        lines.append(_row(lang, r))
    lines.append(_row("all", total))
    return "\n".join(lines)


def _row(name: str, r: list[int]) -> str:
    unk = 100 * r[3] / r[2] if r[2] else 0.0
    return f"{name:<6}{r[0]:>6}{r[1]:>12,}{r[2]:>13,}{unk:>9.3f}{r[4]:>9,}"


def input_fingerprint(files: list[RawFile]) -> dict[str, int]:
    """Path -> size in bytes of every input file: enough to notice a rebuilt corpus."""
    return {str(f.path): f.path.stat().st_size for f in files}


def same_settings(out_dir: str | Path, settings: dict[str, Any]) -> bool:
    """True when ``out_dir`` holds a finished preparation made with these settings, from
    input files that are still there with the same sizes (and no new ones)."""
    p = Path(out_dir) / PREPARE_FILE
    if not p.is_file():
        return False
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
        if not all(info.get(k) == v for k, v in settings.items()):
            return False
        if "raw_references" not in info:  # prepared before the raw valid/test text was kept
            return False
        if "inputs" in info and "raw_dir" in info:
            return input_fingerprint(discover(info["raw_dir"], info.get("languages"))) == info["inputs"]
    except (UnicodeDecodeError, json.JSONDecodeError, DataError, OSError):
        return False
    return True
