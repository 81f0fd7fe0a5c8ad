"""The classification task: LibreOffice help paragraphs labelled by application."""

from __future__ import annotations

from collections import defaultdict

from corpus.config import CORPUS_LANGS, LO_APPS, PAIR_LANGS
from corpus.text import clean_text, looks_english, text_ok
from corpus.util import Hasher, log, sample_keep_order

# --------------------------------------------------------------------------------------
# Classification task (LibreOffice help, labelled by application)
# --------------------------------------------------------------------------------------


def build_classify(lohelp: dict[str, dict], english: set[str], hasher: Hasher, args) -> dict:
    en = lohelp["en"]
    files_of_text: dict[str, set[str]] = defaultdict(set)
    for (f, _), t in en.items():
        files_of_text[t].add(f)

    by_class_file: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for (f, ident), t in en.items():
        label = LO_APPS.get(f.split("/", 1)[0])
        if label is None or len(files_of_text[t]) > 1:
            continue  # shared/other folders; boilerplate repeated on several pages
        t = clean_text(t)
        if not text_ok(t, "en", min_words=4):
            continue
        by_class_file[label][f].append(((f, ident), t))

    def translated(key, lang) -> str | None:
        x = lohelp[lang].get(key)
        if x is None:
            return None
        x = clean_text(x)
        if lang == "en":
            return x
        if not text_ok(x, lang, min_words=2) or x.casefold() in english or looks_english(x, lang):
            return None
        if x.casefold() == clean_text(en[key]).casefold():
            return None
        return x

    out = {"train": [], "valid": [], "test": {lang: [] for lang in CORPUS_LANGS}}
    heldout_texts: set[str] = set()
    summary = {}
    for label in sorted(by_class_file):
        # Test pages are drawn at random among the pages that have paragraphs translated
        # into all languages (so the six test sets overlap as much as possible), up to a
        # quarter of the class; valid and train pages follow in random order.  Whole
        # pages go to one split.
        full = {
            f: sum(all(translated(key, lang) is not None for lang in PAIR_LANGS) for key, _ in by_class_file[label][f])
            for f in by_class_file[label]
        }
        files = sorted(by_class_file[label], key=lambda f: (hasher("cls-file", f), f))
        total = sum(len(by_class_file[label][f]) for f in files)
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
            nt += len(by_class_file[label][f])
            nfull += full[f]
        for f in files:
            if nt >= test_goal:
                break
            if f in test_files:
                continue
            test_files.append(f)
            nt += len(by_class_file[label][f])
        nv = 0
        for f in files:
            if f in test_files:
                continue
            if nv < valid_goal:
                valid_files.append(f)
                nv += len(by_class_file[label][f])
            else:
                train_files.append(f)

        def items(fs):
            return [it for f in sorted(fs) for it in by_class_file[label][f]]

        train = sample_keep_order(items(train_files), args.cls_train, hasher, "cls-train", key=lambda it: it[1])
        valid = sample_keep_order(items(valid_files), args.cls_valid, hasher, "cls-valid", key=lambda it: it[1])
        # test: prefer paragraphs translated in many languages, so that the language
        # versions of the test set overlap as much as possible
        cands = items(test_files)
        cover = {key: sum(translated(key, lang) is not None for lang in PAIR_LANGS) for key, _ in cands}
        ranked = sorted(cands, key=lambda it: (-cover[it[0]], hasher("cls-test", it[1])))
        test = sorted(ranked[: args.cls_test])
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
            "files": {"train": len(train_files), "valid": len(valid_files), "test": len(test_files)},
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
