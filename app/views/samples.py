"""Samples: one prompt with its completions side by side across checkpoints and decoding settings."""

import pandas as pd
import streamlit as st

from analysis import schema as S
from app import data, widgets
from irl import runs as R

root, runs, results = widgets.context()
st.header("Samples")
splits = sorted(results.loc[results["kind"] == R.SWEEP, "name"].unique())
if not splits:
    st.info("No decoding sweeps yet. Run `python -m analysis sweep --run <run>`.")
    st.stop()

top = st.columns([1, 4])
split = widgets.select(top[0], "Split", splits, key="split")
prompts = data.prompts(root, results, split)
text = dict(zip(prompts[S.PROMPT_ID], prompts[S.PROMPT]))
prompt_id = widgets.select(
    top[1], "Prompt", prompts[S.PROMPT_ID], key="prompt", format_func=lambda p: f"{p}: {text[p][:100]!r}"
)  # fmt: skip
samples = data.samples_of_prompt(root, runs, results, split, prompt_id)
first = samples.iloc[0]
left, right = st.columns(2)
with left:
    st.markdown("**Prompt**")
    widgets.text_block(first[S.PROMPT])
with right:
    st.markdown("**Reference**")
    widgets.text_block(first[S.REFERENCE])

ckpts = list(samples.sort_values([S.STEP, S.RUN])[S.CHECKPOINT].unique())
# default: the last checkpoint of one seed of each method
last = samples[samples[S.STEP] == samples[S.STEP].max()].sort_values([S.SEED, S.RUN]).drop_duplicates(S.METHOD)
kind_order = samples[S.KIND].map({"greedy": 0, "sample": 1, "beam": 2})
decodings = list(samples.assign(o=kind_order).sort_values(["o", S.TEMPERATURE, S.BEAMS])[S.DECODING].unique())
pick = st.columns(2)
shown = widgets.multiselect(pick[0], "Checkpoints", ckpts, key="checkpoints", default=sorted(last[S.CHECKPOINT]))
settings = widgets.multiselect(pick[1], "Decodings", decodings, key="decodings", default=decodings[:2])
metrics = S.quality_columns(samples.columns)
table = samples[samples[S.CHECKPOINT].isin(shown) & samples[S.DECODING].isin(settings)]

for ckpt, column in zip(shown, st.columns(max(len(shown), 1))):
    with column:
        st.subheader(ckpt, divider="gray")
        for decoding in settings:
            st.markdown(f"*{decoding}*")
            for _, row in table[(table[S.CHECKPOINT] == ckpt) & (table[S.DECODING] == decoding)].iterrows():
                widgets.text_block(row[S.COMPLETION])
                if S.COMPLETION_CALC in row and row[S.COMPLETION_CALC] != row[S.COMPLETION]:
                    st.caption("with the calculator:")
                    widgets.text_block(row[S.COMPLETION_CALC])
                scores = " · ".join(f"{m} {row[m]:.2f}" for m in metrics if pd.notna(row[m]))
                st.caption(f"#{row[S.SAMPLE]} · {row[S.N_TOKENS]} tokens · {scores}")

# the texts are shown above; the token-id records (lists) would only crowd the table
records = [S.PROMPT_IDS, S.COMPLETION_IDS, S.COMPLETION_CALC_IDS, S.CALC_FORCED]
st.dataframe(table.drop(columns=[S.PROMPT, S.REFERENCE, *records], errors="ignore"), hide_index=True)
