"""The demo's reward reports, each figure beside the likelihood baselines: a math-task checkpoint's built-in
preference set and sweep samples (`reward_report`), and any checkpoint on a JSONL file of preference pairs such
as a text task's data/<task>/preferences.jsonl (`preference_report`).

    from analysis.report import reward_report, format_report
    print(format_report({"mle": reward_report(ckpt_mle), "iqlearn": reward_report(ckpt_iq)}))
    print(format_preference_report({"mle": preference_report(ckpt, "data/summarize/preferences.jsonl")}, title))
"""

import time

from analysis import definitions
from analysis import reward_data as D
from analysis import schema as S
from analysis.cli import BUILTIN_PREFERENCES
from irl.runs import checkpoint_config
from analysis.rewards import Data, load, score_checkpoint
from irl import runs


def reward_report(checkpoint, sweep_split: str = "test", limit: int | None = None, n_boot: int = 1000, seed: int = 0):
    """Rewards of a math-task checkpoint on the built-in preference set and, when irl.runs.sweep_dir(checkpoint,
    sweep_split) holds a sweep, on the samples of its default cell (sampling at the highest temperature), for the
    first `limit` test prompts (None: all). Writes both (rewards/math-preferences and
    rewards/<split>-<decoding>, "-<limit>" appended when limited) and returns: checkpoint, gamma, terminal,
    counts, preferences and preferences_by_source (per score: accuracy with its Wilson interval, ties half, and
    AUC), error_localisation (Hit@1, Hit@3, MRR of the first wrong token per ranking), decoding (the sweep cell,
    or None), correlations (per score: Spearman and Kendall with exact match, prompt-clustered bootstrap
    intervals), best_of_n (exact match of the sample picked by each score, random, oracle), seconds."""
    start = time.perf_counter()
    examples = D.math_test_split(checkpoint_config(checkpoint), checkpoint)[:limit]
    samples_data, decoding = sweep_samples(checkpoint, sweep_split, limit, S.EXACT_MATCH, [ex["id"] for ex in examples])
    pref_rows, meta = D.builtin_rows(examples, samples_data.rows if samples_data is not None else None)
    preferences = Data(runs.rewards_name(BUILTIN_PREFERENCES, limit), pref_rows, meta)
    found = score_checkpoint(checkpoint, [d for d in (preferences, samples_data) if d is not None], n_boot=n_boot,
                             seed=seed)  # fmt: skip
    summary = found[preferences.name]
    keys = ("checkpoint", "gamma", "terminal", "counts", "preferences", "preferences_by_source", "error_localisation")
    report = {k: summary.get(k) for k in keys}
    report |= {"decoding": decoding, "correlations": None, "best_of_n": None}
    if samples_data is not None:
        scored = found[samples_data.name]
        report["correlations"] = {row["reward"]: row for row in scored["correlations"]}
        report["best_of_n"] = scored["best_of_n"][f"{decoding}/{S.EXACT_MATCH}"]
    report["seconds"] = time.perf_counter() - start
    return report


def sweep_samples(checkpoint, split: str, limit: int | None, metric: str, prompt_ids=None):
    """(rewards data, decoding label) of the default cell of a checkpoint's sweep on `split` (sampling at the
    highest temperature, reward_data.default_decoding): the samples of its first `limit` prompts, or of
    `prompt_ids`, scored against `metric`. (None, None) when the checkpoint has no sweep on that split."""
    sweep = runs.sweep_dir(checkpoint, split)
    if not sweep.is_dir():
        return None, None
    samples = D.read_sweep(sweep)
    decoding = D.default_decoding(samples)
    if prompt_ids is None:
        prompt_ids = samples[S.PROMPT_ID].drop_duplicates().iloc[:limit]
    cell = D.sweep_rows(samples[(samples[S.DECODING] == decoding) & samples[S.PROMPT_ID].isin(prompt_ids)])
    return Data(runs.sweep_rewards_name(split, decoding, limit), cell, metrics=(metric,)), decoding


def samples_report(checkpoint, metric: str, split: str = "test", limit: int | None = None, n_boot: int = 1000,
                   seed: int = 0) -> dict | None:
    """Rewards of a checkpoint on its sweep's default-cell samples (`sweep_samples`): per score Spearman and
    Kendall with `metric` (prompt-clustered bootstrap intervals) and best-of-N; None without a sweep."""
    data, decoding = sweep_samples(checkpoint, split, limit, metric)
    if data is None:
        return None
    scored = score_checkpoint(checkpoint, [data], n_boot=n_boot, seed=seed)[data.name]
    return {"decoding": decoding, "metric": metric, "gamma": scored["gamma"],
            "correlations": {row["reward"]: row for row in scored["correlations"]},
            "best_of_n": scored["best_of_n"][f"{decoding}/{metric}"],
            "definitions": [row for row in scored["definitions"] if row["metric"] == metric]}  # fmt: skip


def format_samples_report(reports: dict[str, dict]) -> str:
    """Spearman of each score with the quality metric over the sampled completions, and best-of-N, per checkpoint
    ({name: samples_report(...)})."""
    first, w = next(iter(reports.values())), _method_width(reports)
    spearman = f"Spearman(score, {first['metric']}) [95% CI]"
    lines = [f"Rewards against {first['metric']} on the {first['decoding']} samples (gamma={first['gamma']:g}):",
             f"{'method':<{w}} {'score':<11} {spearman:>40} {'best-of-N':>9}"]  # fmt: skip
    for name, r in reports.items():
        for score in S.SCORES:
            c = r["correlations"][score]
            lines.append(f"{name:<{w}} {score:<11} {c['spearman']:>22.3f} [{c['spearman_low']:.3f}, "
                         f"{c['spearman_high']:.3f}] {r['best_of_n'][score]:>9.3f}")  # fmt: skip
        b = r["best_of_n"]
        lines.append(f"{name:<{w}} {'random':<11} {'':>40} {b['random']:>9.3f}  (oracle {b['oracle']:.3f})")
    return "\n".join(lines)


def format_definitions(preferences: dict[str, dict], samples: dict[str, dict]) -> str:
    """Every reward definition (analysis/definitions.py) per checkpoint: pairwise accuracy on the preference pairs
    ({name: preference_report(...)}), Spearman with the quality metric and best-of-4 accuracy on the sweep's samples
    ({name: samples_report(...)}), each with its 95% interval; then the definition whose Spearman is highest."""
    w = _method_width(preferences)
    first = next(iter(samples.values()))
    k = definitions.K
    lines = [f"Reward definitions side by side (pairwise: preference pairs; Spearman with {first['metric']} and best-"
             f"of-{k}: the {first['decoding']} samples; a random pick of {k} is right {1 / k:.2f} of the time):",
             f"{'method':<{w}} {'definition':<24} {'pairwise [95% CI]':>22} {'Spearman [95% CI]':>24} "
             f"{f'best-of-{k} [95% CI]':>22}"]  # fmt: skip
    best = {}
    for name in preferences:
        pairwise = {row["definition"]: row for row in preferences[name]["definitions"]}
        sampled = {row["definition"]: row for row in samples[name]["definitions"]}
        for definition in S.DEFINITIONS:
            p, s = pairwise[definition], sampled[definition]
            lines.append(f"{name:<{w}} {definition:<24} {p['pairwise_accuracy']:>6.3f} [{p['pairwise_low']:.3f}, "
                         f"{p['pairwise_high']:.3f}] {s['spearman']:>7.3f} [{s['spearman_low']:.3f}, "
                         f"{s['spearman_high']:.3f}] {s[f'best_of_{k}_accuracy']:>6.3f} "
                         f"[{s[f'best_of_{k}_low']:.3f}, {s[f'best_of_{k}_high']:.3f}]")  # fmt: skip
        best[name] = max(sampled.values(), key=lambda row: row["spearman"])["definition"]
    lines.append("Highest Spearman with quality: " + "; ".join(f"{name} {d}" for name, d in best.items()))
    return "\n".join(lines)


def _method_width(reports: dict[str, dict]) -> int:
    """Width of the tables' first column: the longest method name, at least 10."""
    return max([10, *map(len, reports)])


def format_report(reports: dict[str, dict]) -> str:
    """The demo's reward tables for several checkpoints ({name: reward_report(...)}): preference accuracy,
    Spearman with exact match and best-of-N for each score, then error localisation per ranking."""
    first, w = next(iter(reports.values())), _method_width(reports)
    lines = [f"Rewards (gamma={first['gamma']:g}; {first['terminal']}), each score beside the likelihood baselines:",
             f"{'method':<{w}} {'score':<11} {'pref. accuracy [95% CI]':>26} {'Spearman(score, correct) [95% CI]':>35} "
             f"{'best-of-N':>9}"]  # fmt: skip
    for name, r in reports.items():
        for score in S.SCORES:
            pref = r["preferences"][score]
            line = f"{name:<{w}} {score:<11} {pref['accuracy']:>9.3f} [{pref['low']:.3f}, {pref['high']:.3f}]"
            if r["correlations"] is not None:
                c = r["correlations"][score]
                line += f" {c['spearman']:>17.3f} [{c['spearman_low']:.3f}, {c['spearman_high']:.3f}]"
                line += f" {r['best_of_n'][score]:>9.3f}"
            lines.append(line)
        if r["best_of_n"] is not None:
            b = r["best_of_n"]
            lines.append(f"{name:<{w}} {'random':<11} {'':>26} {'':>35} {b['random']:>9.3f}"
                         f"  (oracle {b['oracle']:.3f})")
    lines.append(f"(preferences: reference vs corrupted solutions and correct vs wrong samples; Spearman and best-of-N "
                 f"over the {first['decoding']} samples)")  # fmt: skip
    return "\n".join(lines + ["", format_localisation(reports)])


def format_localisation(reports: dict[str, dict]) -> str:
    """Error localisation per checkpoint and ranking: Hit@1, Hit@3 and MRR of the first wrong token."""
    w = _method_width(reports)
    lines = ["Error localisation on corrupted rejected completions (rank of the first wrong token among theirs):",
             f"{'method':<{w}} {'ranking':<24} {'Hit@1':>6} {'Hit@3':>6} {'MRR':>6}   n"]  # fmt: skip
    for name, r in reports.items():
        loc = r["error_localisation"]
        for ranking, how in S.TOKEN_RANKINGS.items():
            m = loc[ranking]
            label = f"{ranking} ({how})"
            lines.append(f"{name:<{w}} {label:<24} {m['hit@1']:>6.3f} {m['hit@3']:>6.3f} {m['mrr']:>6.3f}   {loc['n']}")
    return "\n".join(lines)


def preference_report(checkpoint, pairs_path, n_boot: int = 1000, seed: int = 0) -> dict:
    """Rewards of a checkpoint on a JSONL file of preference pairs (prompt, chosen, rejected, optional
    prompt_id, source and error_char), written to rewards/<file's folder>-<file's stem>; returns the summary:
    gamma, terminal, counts, preferences (per score: accuracy, Wilson interval, ties half, AUC),
    preferences_by_source, and error_localisation where the pairs carry error_char."""
    data = load(str(pairs_path), checkpoint, name=runs.pairs_rewards_name(pairs_path))
    return score_checkpoint(checkpoint, [data], n_boot=n_boot, seed=seed)[data.name]


def format_preference_report(reports: dict[str, dict], title: str) -> str:
    """Pairwise accuracy of each score per checkpoint ({name: preference_report(...)}), overall and per pair
    source, then error localisation where known."""
    first, w = next(iter(reports.values())), _method_width(reports)
    sources = sorted(first.get("preferences_by_source") or {})
    lines = [f"Rewards on {title} (gamma={first['gamma']:g}; {first['terminal']}):",
             f"{'method':<{w}} {'score':<11} {'accuracy [95% CI], ties 1/2':>30} {'AUC':>6}"
             + "".join(f" {s[:12]:>12}" for s in sources)]  # fmt: skip
    for name, r in reports.items():
        for score in S.SCORES:
            p = r["preferences"][score]
            line = f"{name:<{w}} {score:<11} {p['accuracy']:>13.3f} [{p['low']:.3f}, {p['high']:.3f}] {p['auc']:>6.3f}"
            line += "".join(f" {r['preferences_by_source'][s][score]['accuracy']:>12.3f}" for s in sources)
            lines.append(line)
    lines.append(f"(pairs: {first['counts'].get('pairs')}; per-source columns: accuracy on that kind of pair)")
    if first.get("error_localisation"):
        lines += ["", format_localisation(reports)]
    return "\n".join(lines)
