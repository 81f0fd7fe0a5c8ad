"""The classification task: LibreOffice help paragraphs labelled by application."""

from __future__ import annotations

from collections import defaultdict

from corpus.config import CORPUS_LANGS, LO_APPS, PAIR_LANGS
from corpus.text import clean_text, looks_english, text_ok
from corpus.util import Hasher, log, sample_keep_order

# --------------------------------------------------------------------------------------
# Classification task (LibreOffice help, labelled by application)
# --------------------------------------------------------------------------------------


Paragraph = tuple[tuple[str, str], str]  # ((help file, paragraph id), English text)


def build_classify(lohelp: dict[str, dict], english: set[str], hasher: Hasher, args) -> dict:
    """Train/valid (English) and test (every corpus language) rows ``(label, text)`` in a
    deterministic shuffled order; ``heldout``: the valid and test texts; ``summary``: counts."""
    by_class_file = _paragraphs_by_class_and_page(lohelp["en"])
    translated = _Translations(lohelp, english)
    out: dict = {"train": [], "valid": [], "test": {lang: [] for lang in CORPUS_LANGS}}
    heldout_texts: set[str] = set()
    summary = {}
    for label in sorted(by_class_file):
        pages = by_class_file[label]
        files = _split_pages(pages, translated, hasher, args)
        train, valid, test = _draw_examples(pages, files, translated, hasher, args)
        # rows are shuffled (deterministically) at the end; test rows are ordered by a hash
        # of their (file, id), so the language versions list paragraphs in the same order
        out["train"] += [(hasher("cls-order", t), label, t) for _, t in train]
        out["valid"] += [(hasher("cls-order", t), label, t) for _, t in valid]
        heldout_texts.update(t for _, t in valid)
        n_test = {}
        for lang in CORPUS_LANGS:
            rows = [
                (hasher("cls-order", *key), label, x) for key, _ in test if (x := translated(key, lang)) is not None
            ]
            out["test"][lang] += rows
            heldout_texts.update(x for _, _, x in rows)
            n_test[lang] = len(rows)
        summary[label] = {
            "files": {k: len(v) for k, v in files.items()},
            "train": len(train),
            "valid": len(valid),
            "test": n_test,
        }
        log(f"  classify {label}: {summary[label]}")
    out["train"] = [(label, t) for _, label, t in sorted(out["train"])]
    out["valid"] = [(label, t) for _, label, t in sorted(out["valid"])]
    out["test"] = {lang: [(label, t) for _, label, t in sorted(rows)] for lang, rows in out["test"].items()}
    out["heldout"] = heldout_texts
    out["summary"] = summary
    return out


def _paragraphs_by_class_and_page(en: dict[tuple[str, str], str]) -> dict[str, dict[str, list[Paragraph]]]:
    """label -> help file -> its English paragraphs that pass the filters; folders of no
    application and boilerplate repeated on several pages are left out."""
    files_of_text: dict[str, set[str]] = defaultdict(set)
    for (f, _), t in en.items():
        files_of_text[t].add(f)
    by_class_file: dict[str, dict[str, list[Paragraph]]] = defaultdict(lambda: defaultdict(list))
    for (f, ident), t in en.items():
        label = LO_APPS.get(f.split("/", 1)[0])
        if label is None or len(files_of_text[t]) > 1:
            continue
        t = clean_text(t)
        if not text_ok(t, "en", min_words=4):
            continue
        by_class_file[label][f].append(((f, ident), t))
    return by_class_file


class _Translations:
    """``self(key, lang)``: the cleaned paragraph ``key`` in ``lang``, None where it is missing
    or fails the filters (wrong script, untranslated, looks English)."""

    def __init__(self, lohelp: dict[str, dict], english: set[str]) -> None:
        self.lohelp, self.english = lohelp, english

    def __call__(self, key: tuple[str, str], lang: str) -> str | None:
        x = self.lohelp[lang].get(key)
        if x is None:
            return None
        x = clean_text(x)
        if lang == "en":
            return x
        if not text_ok(x, lang, min_words=2) or x.casefold() in self.english or looks_english(x, lang):
            return None
        if x.casefold() == clean_text(self.lohelp["en"][key]).casefold():
            return None
        return x


def _split_pages(pages: dict[str, list[Paragraph]], translated: _Translations, hasher: Hasher, args) -> dict:
    """Whole help pages go to one split. Test pages are drawn at random among the pages that
    have paragraphs translated into all languages (so the six test sets overlap as much as
    possible), up to a quarter of the class; valid and train pages follow in random order."""
    full = {f: sum(all(translated(key, lang) is not None for lang in PAIR_LANGS) for key, _ in pages[f]) for f in pages}
    files = sorted(pages, key=lambda f: (hasher("cls-file", f), f))
    total = sum(len(pages[f]) for f in files)
    test_goal = min(2 * args.cls_test, total // 4)
    valid_goal = min(args.cls_valid, total // 10)
    test_files, valid_files, train_files = [], [], []
    nt = nfull = 0
    for f in files:
        if nfull >= args.cls_test or nt >= total // 4:
            break
        if full[f] == 0:
            continue
        test_files.append(f)
        nt += len(pages[f])
        nfull += full[f]
    for f in files:
        if nt >= test_goal:
            break
        if f in test_files:
            continue
        test_files.append(f)
        nt += len(pages[f])
    nv = 0
    for f in files:
        if f in test_files:
            continue
        if nv < valid_goal:
            valid_files.append(f)
            nv += len(pages[f])
        else:
            train_files.append(f)
    return {"train": train_files, "valid": valid_files, "test": test_files}


def _draw_examples(
    pages: dict[str, list[Paragraph]], files: dict[str, list[str]], translated: _Translations, hasher: Hasher, args
) -> tuple[list[Paragraph], list[Paragraph], list[Paragraph]]:
    """Train, valid and test paragraphs of one class, capped by ``--cls-*``."""

    def items(fs: list[str]) -> list[Paragraph]:
        return [it for f in sorted(fs) for it in pages[f]]

    train = sample_keep_order(items(files["train"]), args.cls_train, hasher, "cls-train", key=lambda it: it[1])
    valid = sample_keep_order(items(files["valid"]), args.cls_valid, hasher, "cls-valid", key=lambda it: it[1])
    # test: prefer paragraphs translated in many languages, so that the language
    # versions of the test set overlap as much as possible
    cands = items(files["test"])
    cover = {key: sum(translated(key, lang) is not None for lang in PAIR_LANGS) for key, _ in cands}
    ranked = sorted(cands, key=lambda it: (-cover[it[0]], hasher("cls-test", it[1])))
    return train, valid, sorted(ranked[: args.cls_test])
