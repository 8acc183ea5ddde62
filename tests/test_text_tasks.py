"""The built-in text tasks: the split rule, building on a fake package tree, the committed data, the loader,
preference pairs and the trivial baselines."""

import json
import random
from collections import Counter
from types import SimpleNamespace

import pytest

from analysis import baselines
from analysis import schema as S
from analysis.schema import HIGHER_IS_BETTER
from irl.data import DataError, load_splits
from tasks import text as T
from tasks.corpus import CorpusConfig, build_corpus
from tests.test_corpus import write_mo

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def make_task_trees(root, n=60):
    """Two fake packages: n man pages with distinct summaries (and one duplicate summary, one page sharing
    another's description) and a French catalog of n plain sentences plus messages that must be skipped."""
    man = root / "pages" / "usr/share/man/man1"
    man.mkdir(parents=True)
    for i in range(n):
        a, b, c = WORDS[i % 16], WORDS[(i // 16) % 16], WORDS[(3 * i) % 16]
        summary = f"{a} the {b} {c} records number {i}"
        description = " ".join(f"Sentence {j} of page {i} tells how {a} handles {b} and {c}." for j in range(4))
        man.joinpath(f"p{i:02d}.1").write_text(
            f".TH P{i} 1\n.SH NAME\np{i:02d} \\- {summary}\n.SH DESCRIPTION\n{description}\n"
        )
    # same summary as p00 (case differs): one of the two is kept
    man.joinpath("zdup.1").write_text(
        ".TH Z 1\n.SH NAME\nzdup \\- Alpha the alpha alpha records number 0\n.SH DESCRIPTION\n"
        + " ".join(f"Another text {j} about duplicates of summaries." for j in range(5))
        + "\n"
    )
    msgs = [
        (
            f"The {WORDS[i % 16]} operation {i} could not be completed.",
            f"L'opération {WORDS[i % 16]} {i} n'a pas pu aboutir.",
        )
        for i in range(n)
    ]
    msgs += [
        ("Usage: %s [OPTION]... FILE", "Utilisation : %s [OPTION]... FICHIER"),
        ("&Open", "&Ouvrir"),
        ("Use --force to overwrite the file.", "Utilisez --force pour écraser le fichier."),
        ("Same text here.", "Same text here."),
    ]
    write_mo(root / "msgs" / "usr/share/locale/fr/LC_MESSAGES/msgs.mo", msgs)
    return {p.name: p for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    trees = make_task_trees(root / "trees")
    versions = {"pages": "1.0", "msgs": "2.0"}
    T.build_tasks(trees, versions, root / "a")
    T.build_tasks(trees, versions, root / "b")
    return root, trees


def _rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


# ---------------------------------------------------------------------------------------------------------------
# The split rule and the prompt format


def test_split_rule_is_a_stable_hash():
    keys = [f"key {i}" for i in range(20000)]
    splits = Counter(T.split_of("summarize", k) for k in keys)
    assert abs(splits["test"] / len(keys) - T.TEST_FRACTION) < 0.01
    assert abs(splits["validation"] / len(keys) - T.VALIDATION_FRACTION) < 0.01
    assert [T.split_of("summarize", k) for k in keys[:50]] == [T.split_of("summarize", k) for k in keys[:50]]
    assert [T.split_of("summarize", k) for k in keys[:200]] != [T.split_of("translate", k) for k in keys[:200]]


def test_prompt_and_completion_format():
    ex = T.make_example("summarize", "x", "The ls program lists files.", "list directory contents")
    assert ex["prompt"] == "Summarize: The ls program lists files.\nSummary:"
    assert ex["completion"] == " list directory contents"
    assert T.task_input("summarize", ex["prompt"]) == "The ls program lists files."
    ex = T.make_example("translate", "y", "File not found.", "Fichier introuvable.")
    assert (
        ex["prompt"] == "Translate to French: File not found.\nFrench:" and ex["completion"] == " Fichier introuvable."
    )
    with pytest.raises(ValueError, match="not a summarize prompt"):
        T.task_input("summarize", ex["prompt"])


def test_candidates_literal():
    sections = [
        ("NAME", ["ls, dir - list directory contents"]),
        ("DESCRIPTION", ["List information about the FILEs. " * 5, "code\nblock"]),
    ]
    item = T.summarize_candidate(sections)
    assert item["summary"] == "list directory contents" and item["key"] == "list directory contents"
    assert item["document"] == " ".join(("List information about the FILEs. " * 5).split())  # no-fill block left out
    assert T.summarize_candidate([("NAME", ["ls - list"]), ("DESCRIPTION", ["short"])]) is None
    assert (
        T.translate_candidate(None, "The file could not be read.", "Le fichier n'a pas pu être lu.")["target"]
        == "Le fichier n'a pas pu être lu."
    )
    for msgid, msgstr in [
        ("Cannot open %s.", "Impossible d'ouvrir %s."),
        ("&Save the file now.", "&Enregistrer."),
        ("Use --all to list them.", "Utilisez --all."),
        ("Too short.", "Trop court."),
        ("The same sentence here.", "The same sentence here."),
        ("The file was read.", ""),
    ]:
        assert T.translate_candidate(None, msgid, msgstr) is None, msgid


# ---------------------------------------------------------------------------------------------------------------
# Building on a fake tree


def test_build_is_deterministic_and_splits_follow_the_rule(built):
    root, _ = built
    for task in T.TASKS:
        for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "preferences.jsonl", "README.md"):
            assert (root / "a" / task / name).read_bytes() == (root / "b" / task / name).read_bytes(), (task, name)
        prompts = {}
        for split in T.TASK_SPLITS:
            rows = _rows(root / "a" / task / f"{split}.jsonl")
            assert rows, (task, split)
            for r in rows:
                key = (
                    T.summary_key(r["completion"][1:])
                    if task == "summarize"
                    else T.msgid_key(T.task_input(task, r["prompt"]))
                )
                assert T.split_of(task, key) == split
                assert r["completion"].startswith(" ") and not r["completion"].startswith("  ")
                assert r["prompt"] == r["prompt"].rstrip()
            prompts[split] = {r["prompt"] for r in rows}
        assert not (prompts["train"] & prompts["test"]) and not (prompts["train"] & prompts["validation"])
        assert not (prompts["validation"] & prompts["test"])


def test_build_deduplicates_and_filters(built):
    root, _ = built
    summaries = [
        r["completion"][1:].lower() for s in T.TASK_SPLITS for r in _rows(root / "a" / "summarize" / f"{s}.jsonl")
    ]
    assert len(summaries) == len(set(summaries)) == 60  # 60 pages + one duplicate summary
    inputs = [
        T.task_input("translate", r["prompt"])
        for s in T.TASK_SPLITS
        for r in _rows(root / "a" / "translate" / f"{s}.jsonl")
    ]
    assert len(inputs) == 60 and all(x.startswith("The ") for x in inputs)  # format-heavy and copied messages skipped


def test_heldout_items_of_both_tasks_are_absent_from_the_corpus(built, tmp_path):
    root, trees = built
    build_corpus(trees, tmp_path / "corpus", CorpusConfig(min_doc_chars=1))
    corpus = [
        T.normalize(json.loads(line)["text"])
        for split in ("train", "validation")
        for line in open(tmp_path / "corpus" / f"{split}.jsonl")
    ]
    assert corpus
    found = {"held_out": 0, "train": 0}
    for task in T.TASKS:
        for split in T.TASK_SPLITS:
            for r in _rows(root / "a" / task / f"{split}.jsonl"):
                texts = (T.task_input(task, r["prompt"]), r["completion"][1:])
                present = [any(T.normalize(t) in doc for doc in corpus) for t in texts]
                if split == "train":
                    found["train"] += present[0]
                else:
                    assert not any(present), (task, split, texts)
                    found["held_out"] += 1
    assert found["held_out"] > 10 and found["train"] > 50  # train inputs do reach the corpus


# ---------------------------------------------------------------------------------------------------------------
# Preference pairs


def test_error_char_literal():
    assert T.first_difference(" list directory contents", " list directory names") == 16
    assert T.corrupt_reference(" of contents", ["names"], random.Random(0)) == " of names"
    assert T.first_difference(" of contents", " of names") == 4
    assert T.corrupt_reference(" of the", ["names"], random.Random(0)) is None  # no content word
    assert T.corrupt_reference(" Contents", ["names"], random.Random(0)) == " Names"  # case kept
    # a word that extends the replaced one would leave no differing character at error_char: never drawn
    assert T.corrupt_reference(" of name", ["names namespace"], random.Random(0)) is None
    assert T.corrupt_reference(" of names", ["name"], random.Random(0)) is None
    assert T.corrupt_reference(" of names", ["name value"], random.Random(0)) == " of value"


def check_pairs(pairs, test_rows):
    by_id = {r["id"]: r for r in test_rows}
    assert {p["kind"] for p in pairs} == {"other_item", "corrupted"}
    for p in pairs:
        ex = by_id[p["prompt_id"]]
        assert p["prompt"] == ex["prompt"] and p["chosen"] == ex["completion"]
        assert p["rejected"] != p["chosen"] and p["source"] == p["kind"]
        if p["kind"] == "other_item":
            assert p["rejected"] in {r["completion"] for r in test_rows}
        else:
            k = p["error_char"]
            assert p["rejected"][:k] == p["chosen"][:k] and p["rejected"][k] != p["chosen"][k]


def test_preference_pairs_on_fixture(built):
    root, _ = built
    for task in T.TASKS:
        check_pairs(_rows(root / "a" / task / "preferences.jsonl"), _rows(root / "a" / task / "test.jsonl"))


# ---------------------------------------------------------------------------------------------------------------
# The loader


def test_loader_errors_name_file_and_line(tmp_path, monkeypatch):
    cfg = SimpleNamespace(data="summarize", train_size=None, validation_size=None)
    monkeypatch.setattr(T, "DATA_DIR", tmp_path)
    with pytest.raises(DataError, match="missing .*summarize/train.jsonl"):
        load_splits(cfg)
    d = tmp_path / "summarize"
    d.mkdir()
    for split in T.TASK_SPLITS:
        d.joinpath(f"{split}.jsonl").write_text(
            '{"id": "a", "prompt": "Summarize: x\\nSummary:", "completion": " y"}\n'
        )
    assert {s: len(r) for s, r in load_splits(cfg).items()} == {
        "train": 1,
        "validation": 1,
        "test": 1,
    }
    d.joinpath("train.jsonl").write_text('{"prompt": "p", "completion": " c"}\n{"prompt": "p", \n')
    with pytest.raises(DataError, match=r"train.jsonl:2: malformed JSON"):
        load_splits(cfg)
    d.joinpath("train.jsonl").write_text('{"prompt": "p", "completion": 3}\n')
    with pytest.raises(DataError, match=r"train.jsonl:1: field 'completion' must be a string"):
        load_splits(cfg)


# ---------------------------------------------------------------------------------------------------------------
# Declared metrics and baselines


def test_metrics_declared():
    for task, spec in T.TASKS.items():
        assert spec["main"] == spec["metrics"][0] and S.TASK_METRICS[task] == spec["metrics"]
        assert all(HIGHER_IS_BETTER[m] for m in spec["metrics"])
        scores = baselines.score(task, ["a b c", "d"], ["a b c", "e"])
        assert tuple(scores) == spec["metrics"] and all(len(v) == 2 for v in scores.values())


def _ex(task, text, ref):
    return T.make_example(task, text, text, ref)


def test_first_k_words_choice_hand_computed():
    # references are the first two words: k=1 -> ROUGE-L F 2/3, k=2 -> 1, k=3 -> 4/5, k=4 -> 2/3
    val = [_ex("summarize", "alpha beta gamma delta", "alpha beta"), _ex("summarize", "one two three four", "one two")]
    assert baselines.choose_k("summarize", val, range(1, 5)) == 2
    assert baselines.first_k_words("summarize", val, 2) == ["alpha beta", "one two"]
    # translation: chrF picks the k that covers the reference's characters
    val = [_ex("translate", "Fichier introuvable maintenant ici.", "Fichier introuvable")]
    assert baselines.choose_k("translate", val, range(1, 5)) == 2
    assert baselines.copy_input("translate", val) == ["Fichier introuvable maintenant ici."]


def test_best_constant_hand_computed():
    train = [_ex("summarize", f"t{i}", r) for i, r in enumerate(["list files", "list files", "show text"])]
    val = [_ex("summarize", "v1", "list files"), _ex("summarize", "v2", "list dirs")]
    candidates = baselines.constant_candidates(train, top=2, max_n=2)
    # whole references by count, then unigrams and bigrams by the references they occur in (ties alphabetical)
    assert candidates == ["list files", "show text", "files", "list"]
    # "list files": ROUGE-L 1.0 and 0.5 (mean 0.75); "list": 2/3 and 2/3; "files": 2/3 and 0
    assert baselines.choose_constant("summarize", train, val) == "list files"


def test_baselines_report_scores_every_metric():
    rows = [_ex("translate", f"Message number {i} here.", f"Message numéro {i} ici.") for i in range(6)]
    report = baselines.report("translate", {"train": rows, "validation": rows, "test": rows})
    assert [r["baseline"] for r in report] == ["first_k_words", "best_constant", "copy_input"]
    for r in report:
        assert {"chrf", "chrf_se", "bleu", "bleu_se", "corpus_bleu", "corpus_chrf"} <= set(r) and r["n"] == 6
    assert "± " in baselines.format_report("translate", report)



def test_baseline_settings_are_chosen_once_per_set_of_examples(monkeypatch):
    """A sweep asks for the baselines once per run: the settings are chosen once for the same train and validation
    examples, and again, by the same rule, when the examples differ."""
    calls = []
    choose_k = baselines.choose_k
    monkeypatch.setattr(baselines, "choose_k", lambda task, rows: calls.append(1) or choose_k(task, rows, range(1, 5)))
    rows = [_ex("summarize", f"alpha beta gamma {i}", "alpha beta") for i in range(4)]
    splits = {"train": rows, "validation": rows, "test": rows}
    first = baselines.baselines("summarize", splits)
    again = baselines.baselines("summarize", {**splits, "test": rows[:2]})
    assert len(calls) == 1 and first[0].setting == again[0].setting == {"k": 2}
    other = [_ex("summarize", f"alpha beta gamma {i}", "alpha beta gamma") for i in range(4)]
    changed = baselines.baselines("summarize", {"train": rows, "validation": other, "test": other})
    assert len(calls) == 2 and changed[0].setting == {"k": 3}

# ---------------------------------------------------------------------------------------------------------------
# The committed data


@pytest.mark.parametrize("task", sorted(T.TASKS))
def test_committed_task_data(task):
    splits = T.task_splits(task)
    loaded = load_splits(SimpleNamespace(data=task, train_size=None, validation_size=None))
    assert {s: len(r) for s, r in loaded.items()} == {s: len(r) for s, r in splits.items()}
    assert all(len(splits[s]) >= 200 for s in T.TASK_SPLITS)
    prompts = {s: {r["prompt"] for r in rows} for s, rows in splits.items()}
    assert not (prompts["train"] & prompts["test"]) and not (prompts["train"] & prompts["validation"])
    for split, rows in splits.items():
        for r in rows:
            key = (
                T.summary_key(r["completion"][1:])
                if task == "summarize"
                else T.msgid_key(T.task_input(task, r["prompt"]))
            )
            assert T.split_of(task, key) == split
    check_pairs(_rows(T.preferences_path(task)), splits["test"])


def test_card_gets_the_baselines_section_in_place(built):
    """The task builder writes the card without scores; analysis.baselines puts its section before the sources,
    and a second write replaces it instead of adding another."""
    root, _ = built
    card = root / "a" / "translate" / "README.md"
    plain = card.read_text()
    assert baselines.CARD_SECTION not in plain
    splits = {s: _rows(root / "a" / "translate" / f"{s}.jsonl") for s in T.TASK_SPLITS}
    rows = baselines.report("translate", splits)
    baselines.write_card_section(card, "translate", rows)
    once = card.read_text()
    baselines.write_card_section(card, "translate", rows)
    assert card.read_text() == once and once.count(baselines.CARD_SECTION) == 1
    assert once.index(baselines.CARD_SECTION) < once.index(baselines.CARD_NEXT)
    assert once.replace(baselines.card_section("translate", rows), "") == plain
