"""Token rewards: one completion's per-token terms under one checkpoint, or two side by side, coloured by the
chosen quantity; examples found by correctness or reward; and, for two checkpoints on the same completions, the
change in reward and log π per token: the example coloured by it, its tokens and the split's by the largest
change, and the token texts that moved most (across the split: at once up to ACROSS_ROWS token rows, on request
above)."""

import pandas as pd
import streamlit as st

from analysis import schema as S
from app import charts, data, tables, widgets
from irl import runs as R

CHANGES = {S.REWARD: "Δr_t", S.LOGP: "Δlog π"}  # the per-token changes between two checkpoints
# token rows of the two tables together up to which they are compared whole at once (on 2 cores about a second
# per million rows); larger ones on request, so that the page opens without waiting for them
ACROSS_ROWS = 1_000_000
# matching examples the page lists at most (all of them in its CSV): the browser receives and draws every row it
# lists (1,000 rows of a sweep's columns took 0.7 s more than 100)
SHOWN_EXAMPLES = 200
SEQUENCE_DEFINITIONS = [sequence for _, sequence in S.DEFINITIONS.values()]  # each definition's completion score

root, runs, results = widgets.context()
st.header("Token rewards")
scored = results[(results["kind"] == R.REWARDS) & results["files"].map({R.TOKENS_FILE, R.SEQUENCES_FILE}.issubset)]
if scored.empty:
    st.info("No reward tables yet. Run `python -m analysis rewards --checkpoint <run>/checkpoint-<step> --data ...`.")
    st.stop()

top = st.columns([1, 2, 2])
data_name = widgets.select(top[0], "Data", sorted(scored["name"].unique()), key="data")
ckpts = scored[scored["name"] == data_name].merge(runs[[S.RUN, S.METHOD]], on=S.RUN).sort_values([S.STEP, S.RUN])
labels = [data.checkpoint_label(r, s) for r, s in zip(ckpts[S.RUN], ckpts[S.STEP])]
where = dict(zip(labels, zip(ckpts[S.RUN], ckpts[S.STEP], ckpts[S.METHOD])))
last = [label for label in labels if where[label][1] == ckpts[S.STEP].max()]
label_a = widgets.select(top[1], "Checkpoint", labels, key="checkpoint", index=labels.index(last[-1]))
others = [label for label in labels if label != label_a]
# default partner: another method at the same step (e.g. MLE next to IQLearn)
partner = [o for o in others if where[o][1] == where[label_a][1] and where[o][2] != where[label_a][2]]
label_b = widgets.select(
    top[2], "Side by side with", ["none", *others], key="beside", index=1 + others.index(partner[0]) if partner else 0
)  # fmt: skip
chosen = [label_a] + ([label_b] if label_b != "none" else [])
summaries = data.summaries(root, results, data_name)
summaries = {where[label][:2]: summaries[where[label][:2]] for label in chosen if where[label][:2] in summaries}
# the per-sample metrics the analysis correlated R with (exact_match_calc scores another text than this one)
metrics = list(dict.fromkeys(tables.summary_correlations(summaries)["metric"]))
if summaries:
    st.caption(f"Rewards: {tables.reward_rule(summaries)}.")


def sequences(label, only=None):
    run, step, _ = where[label]
    return data.sequences(root, run, step, data_name, only)


# without the samples' texts (data.TEXTS): the prompts' come once each, the rest for the examples listed
columns_a = data.sequence_columns(root, *where[label_a][:2], data_name)
seqs = sequences(label_a, [c for c in columns_a if c not in data.TEXTS])
find = st.columns(3)
correctness = "all"
if S.EXACT_MATCH in seqs.columns:
    options = ["all", "correct", "incorrect"]
    correctness = widgets.segmented(find[0], "Find by correctness", options, key="correct", default="all")
options = ["highest first", "lowest first"]
order = widgets.segmented(find[1], "Order by score", options, key="order", default="highest first")
r_col = widgets.segmented(
    find[2], "Sequence score", [s for s in dict.fromkeys([*S.SCORES, *SEQUENCE_DEFINITIONS]) if s in seqs], key="score",
    default=S.R_CENTERED,
    help="R sums the rewards, R_mean per token, R_centered subtracts the mean R of the prompt's completions; "
    "logp_sum (log π(y|x)), logp_mean and length are the likelihood baselines; R_gamma1, R_implicit and R_baseline "
    "sum the other reward definitions (r_t at γ = 1, the implicit reward, r_t minus the prompt's baseline).",
)  # fmt: skip
found = seqs if correctness == "all" else seqs[(seqs[S.EXACT_MATCH] == 1) == (correctness == "correct")]
# the examples' order by the score: sorted as one column, the table taken in that order where it is listed (at 200k
# completions, sorting every column costs more than the rest of the page's reading)
ordered = found[r_col].sort_values(ascending=order == "lowest first", kind="stable").index
if found.empty:
    st.info("No example matches.")
    st.stop()


def source(row) -> str:
    """Which completion an example is, as far as the table says: a side of a preference pair, a sample of a
    decoding setting, or the data set's own completion."""
    if S.SIDE in row:
        known = f", error at token {row[S.ERROR_POSITION]:.0f}" if pd.notna(row.get(S.ERROR_POSITION)) else ""
        return f"{row[S.SIDE]} of pair {row[S.PAIR_ID]}{known}"
    if S.DECODING in row:
        return f"{row[S.DECODING]} #{row[S.SAMPLE]}"
    return f"example {row[S.EXAMPLE_ID]}"


run_a, step_a, _ = where[label_a]
if S.PROMPT in columns_a:
    texts = data.sequence_prompts(root, run_a, step_a, data_name)
    text = dict(zip(texts[S.PROMPT_ID].tolist(), texts[S.PROMPT].tolist()))
else:  # from the checkpoint's sweep of a split of the same name, if any
    sweep = results[(results[S.RUN] == run_a) & (results[S.STEP] == step_a) & (results["kind"] == R.SWEEP)]
    texts = data.prompts(root, sweep, data_name)
    text = dict(zip(texts[S.PROMPT_ID], texts[S.PROMPT]))
ordered_prompts = found[S.PROMPT_ID].loc[ordered]
prompts = ordered_prompts.unique()  # best match first
limit = tables.PROMPT_CHOICES
many = len(prompts) > limit
columns = st.columns([1, 2, 2] if many else [1, 1])
prompt_column, completion_column = columns[-2:]
query = widgets.search(
    columns[0], "Find a prompt", key="find", placeholder="id or text",
    help=f"Lists the prompts whose id or text holds this (any case); the picker lists the first {limit:,}.",
) if many else ""  # fmt: skip
options, matching = tables.prompt_choices(prompts, text, query, limit)
linked = st.query_params.get("prompt")  # the prompt picked, or the link's
if linked not in options and linked in set(prompts):
    if query:  # it does not hold what was typed: the picker starts on the first prompt that does
        st.query_params.pop("prompt")
    else:  # past the first ones: listed first, so that a link opens any prompt
        options = [linked, *options]
if not matching:
    st.info("No prompt holds the text typed in *Find a prompt*.")  # the text itself is shown in its box
    st.stop()
if matching > limit:
    st.caption(f"The first {limit:,} of the {matching:,} prompts{' holding it' if query else ''} in this order; "
               "*Find a prompt* reaches the others.")  # fmt: skip
prompt_id = widgets.select(
    prompt_column, "Prompt (best match first)", options, key="prompt",
    format_func=lambda p: f"{p}: {text[p][:90]!r}" if p in text else p,
)  # fmt: skip
of_prompt = found.loc[ordered[(ordered_prompts == prompt_id).to_numpy()]]
of_prompt = of_prompt.set_index(S.EXAMPLE_ID, drop=False)
mark = {1.0: " ✓", 0.0: " ✗"}
example_id = widgets.select(
    completion_column, "Completion", of_prompt.index, key="example",
    format_func=lambda e: f"{source(of_prompt.loc[e])}   {r_col} = {of_prompt.loc[e, r_col]:.2f}"
    + (mark.get(of_prompt.loc[e, S.EXACT_MATCH], "") if S.EXACT_MATCH in of_prompt else ""),
)  # fmt: skip
if prompt_id in text:
    widgets.text_block(text[prompt_id])


scored_columns = data.token_columns(root, *where[label_a][:2], data_name)


@st.fragment  # recolouring reruns only this part
def show_tokens(example_id: int) -> None:
    """The completion under each chosen checkpoint, coloured by the quantity picked here."""
    quantities = [q for q in charts.TOKEN_QUANTITIES if q != S.TOKEN_ENTROPY or S.TOKEN_ENTROPY in scored_columns]
    quantity = widgets.segmented(
        st, "Colour by", quantities, key="colour", default=S.REWARD, format_func=charts.TOKEN_QUANTITIES.get,
        help="reward r_t = Q(s_t,a_t) - gamma V(s_t+1);  log π(a_t|s_t) = Q - V;  V(s_t) = logsumexp;  entropy of "
        "π(·|s_t).",
    )  # fmt: skip
    token_ids = {}
    shown = [S.EXAMPLE_ID, *S.REWARD_SCORES, *S.LIKELIHOOD_SCORES, *metrics, S.ERROR_POSITION]  # in the captions
    for label, column in zip(chosen, st.columns(len(chosen))):
        run, step, _ = where[label]
        with column:
            st.subheader(label, divider="gray")
            toks = data.tokens(root, run, step, data_name, example_id)
            if toks.empty:
                st.info(f"{label} has no example {example_id} in `{data_name}`.")
                continue
            token_ids[label] = tuple(toks[S.TOKEN_ID])
            table = seqs if label == label_a else sequences(label, shown)  # the page's own for its checkpoint
            row = table[table[S.EXAMPLE_ID] == example_id].iloc[0]
            st.caption(" · ".join(f"{s} = {row[s]:.3f}" for s in S.REWARD_SCORES if s in row.index))
            baselines = [f"{s} = {row[s]:.3f}" for s in S.LIKELIHOOD_SCORES if s in row.index and s != S.LENGTH]
            quality = [f"{c} = {row[c]:g}" for c in metrics if c in row.index]
            st.caption(" · ".join([*baselines, f"{len(toks)} tokens", *quality]))
            error = int(row[S.ERROR_POSITION]) if pd.notna(row.get(S.ERROR_POSITION)) else None
            if error is not None:
                st.caption(f"Outlined: the known first wrong token (position {error}) of this corrupted completion.")
            st.html(charts.tokens_html(toks, quantity, error))
            figure = charts.token_figure(toks, quantity, "per token", error)
            widgets.chart(figure, toks, f"tokens-{label}-{data_name}-{example_id}")
    if len(set(token_ids.values())) > 1:
        st.warning(f"The checkpoints scored different completions under example {example_id}: compare with care.")
    toks = data.tokens(root, *where[label_a][:2], data_name, example_id)
    stored = {name: column for name, (column, _) in S.DEFINITIONS.items() if column in toks}
    if len(stored) > 1 and not toks.empty:
        st.markdown(f"**Two reward definitions on the same tokens** ({label_a}), and their difference")
        pick = st.columns(2)
        names = list(stored)
        first = widgets.select(pick[0], "Definition", names, key="definition")
        second = widgets.select(pick[1], "against", names, key="against", index=names.index("log π"))
        columns = {column: name for name, column in stored.items()}
        st.html(charts.definitions_html(toks, stored[first], stored[second], columns))
        st.caption(tables.DEFINITIONS_TEXT)


show_tokens(example_id)
# drawn only while open (its table reads the examples' texts): a rerun when it opens or closes
examples = st.expander(f"{len(found)} matching examples of {label_a}", key="examples", on_change="rerun")
if examples.open:
    found = found.loc[ordered]
    with examples:
        if len(found) > SHOWN_EXAMPLES:
            st.caption(f"The first {SHOWN_EXAMPLES:,} in this order; the CSV holds all {len(found):,}.")
        st.dataframe(data.with_texts(root, run_a, step_a, data_name, found.head(SHOWN_EXAMPLES)), hide_index=True)
        st.download_button(
            "Download CSV", data=lambda: data.with_texts(root, run_a, step_a, data_name, found, cache=False).to_csv(
                index=False), file_name=f"examples-{label_a}-{data_name}.csv",
            mime="text/csv", key="csv-examples", icon=":material/download:",
        )  # fmt: skip

if len(chosen) == 2:
    run_b, step_b, _ = where[label_b]
    st.subheader(f"What changed from {label_a} (a) to {label_b} (b)")
    rows = data.token_rows(root, run_a, step_a, data_name) + data.token_rows(root, run_b, step_b, data_name)
    across = st.toggle(
        f"Across every completion of `{data_name}`", value=rows <= ACROSS_ROWS,
        key=f"across-{data_name}-{label_a}-{label_b}",  # one per pair of tables: its default follows their size
        help=f"Compares the two token tables whole ({rows:,} rows together: about a second per million rows); "
        f"on by itself up to {ACROSS_ROWS:,} rows.",
    )  # fmt: skip
    if across:
        compared, changes = data.token_changes(root, (run_a, step_a), (run_b, step_b), data_name)
        if not compared:
            st.info("The two checkpoints scored no completion in common (same tokens under the same example id).")
            st.stop()
    change = widgets.segmented(
        st, "Change in", tables.DIFFERENCES, key="change", default=S.REWARD, format_func=CHANGES.get,
        help="b minus a, per token of the completions both scored with the same tokens.",
    )  # fmt: skip
    name = f"{tables.delta(change)}-{label_b}-minus-{label_a}-{data_name}"
    compare = [S.EXAMPLE_ID, S.POSITION, S.TOKEN_ID, S.TOKEN, *tables.DIFFERENCES]
    one = tables.token_differences(*(data.tokens(root, run, step, data_name, example_id)[compare]
                                     for run, step in ((run_a, step_a), (run_b, step_b))))  # fmt: skip
    left, right = widgets.side_by_side("changes")
    with left:
        st.markdown(f"**This completion, coloured by {CHANGES[change]}** (blue: higher under b, red: lower), its "
                    "tokens by the size of the change")  # fmt: skip
        if one.empty:
            st.info(f"The two checkpoints did not score the same tokens under example {example_id}.")
        else:
            st.html(charts.difference_html(one, change, label_a, label_b))
            widgets.table(tables.largest_changes(one, change, top=None), f"{name}-example-{example_id}")
    with right:
        if across:
            largest, moves = changes[change]
            st.markdown(f"**Across `{data_name}`: the tokens whose {change} moved most** ({compared} completions "
                        "compared)")  # fmt: skip
            widgets.table(largest, f"{name}-largest")
            st.markdown("**By token text**: the mean change over its occurrences (seen at least twice)")
            widgets.table(moves, f"{name}-by-token")
        else:
            st.info(f"Turn on *Across every completion* to compare the two token tables whole ({rows:,} rows).")
