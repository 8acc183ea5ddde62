"""The experiment grid: a YAML file expands into the literal runs it names, a finished run is kept, an interrupted
one resumed to the weights of an uninterrupted one; training subsets are nested; bad grids fail naming the key."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from findings.grid import GridError, expand, load_grid, train_all
from irl.config import ConfigError, TrainConfig
from irl.data import DataError, load_splits
from irl.runs import checkpoints, last_checkpoint
from tests.test_train import CrashAt

SPEC = {
    "output_dir": "g",
    "base": {"model": "tiny", "max_steps": 3},
    "methods": [{"name": "mle", "objective": "mle", "beta": 0.0}, {"name": "iq", "objective": "iqlearn", "lam": 0.1}],
    "grid": [
        {"axes": {"method": ["mle", "iq"], "seed": [0, 1]}},
        {
            "axes": {"method": ["mle", {"name": "ent", "objective": "mle", "beta": 0.1}], "train_size": [None, 8],
                     "seed": [0]},
            "decodings": {"temperatures": [0], "beams": [1]},
            "rewards": False,
        },  # fmt: skip
        {"axes": {"lam": [0.3], "objective": ["iqlearn"]}},
    ],
    "sweep": {"temperatures": [0, 1], "beams": [1, 4], "limit": 10},
}


def test_expand_gives_the_literal_runs():
    base = {"model": "tiny", "max_steps": 3}
    mle, iq, ent = dict(objective="mle", beta=0.0), dict(objective="iqlearn", lam=0.1), dict(objective="mle", beta=0.1)
    points = expand(SPEC)
    assert [(p.name, p.values) for p in points] == [
        ("mle/seed0", {**base, **mle, "seed": 0}),
        ("mle/seed1", {**base, **mle, "seed": 1}),
        ("iq/seed0", {**base, **iq, "seed": 0}),
        ("iq/seed1", {**base, **iq, "seed": 1}),
        ("mle-train_size8/seed0", {**base, **mle, "train_size": 8, "seed": 0}),
        ("ent/seed0", {**base, **ent, "seed": 0}),
        ("ent-train_size8/seed0", {**base, **ent, "train_size": 8, "seed": 0}),
        ("lam0.3-objectiveiqlearn", {**base, "lam": 0.3, "objective": "iqlearn"}),
    ]
    cells = {p.name: (p.temperatures, p.beams, p.rewards) for p in points}
    # mle/seed0 is in both sub-grids: swept over the union of their cells, rewards extracted (first sub-grid)
    assert cells["mle/seed0"] == ((0.0, 1.0), (1, 4), True)
    assert cells["mle/seed1"] == ((0.0, 1.0), (1, 4), True)
    assert cells["ent-train_size8/seed0"] == ((0.0,), (1,), False)
    assert cells["lam0.3-objectiveiqlearn"] == ((0.0, 1.0), (1, 4), True)
    assert {(p.top_p, p.min_p) for p in points} == {((1.0,), (0.0,))}  # no filters unless asked for


def test_top_p_and_min_p_are_cells_of_the_sweep_or_of_a_sub_grid():
    spec = {**SPEC, "sweep": {**SPEC["sweep"], "top_p": [0.9, 1]}}
    spec["grid"] = [*SPEC["grid"][:2], {"axes": {"lam": [0.3], "objective": ["iqlearn"]},
                                       "decodings": {"temperatures": [1], "min_p": [0, 0.1]}}]  # fmt: skip
    cells = {p.name: (p.temperatures, p.top_p, p.min_p) for p in expand(spec)}
    assert cells["mle/seed0"] == ((0.0, 1.0), (0.9, 1.0), (0.0,))  # the sweep's top_p, for every run
    assert cells["lam0.3-objectiveiqlearn"] == ((1.0,), (0.9, 1.0), (0.0, 0.1))  # its own min_p


def test_load_grid_builds_every_config_through_the_loader(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "output_dir": str(tmp_path / "g")}))
    grid = load_grid(path)
    assert grid.run_dir(grid.points[2]) == tmp_path / "g" / "iq" / "seed0"
    assert grid.sweep == {"limit": 10} and grid.rewards == {"limit": 10, "n_boot": 1000, "preferences": None}
    # a wrong field or value fails before any work, naming it
    for bad, match in ((dict(base={"model": "tiny", "lamda": 0.1}), "lamda"), (dict(base={"lam": -1}), "lam=-1")):
        path.write_text(yaml.safe_dump({**SPEC, **bad}))
        with pytest.raises(ConfigError, match=match):
            load_grid(path)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(grid=[{"axes": {"method": ["nope"]}}]), "no preset named 'nope'"),
        (dict(grid=[{"axes": {"output_dir": ["x"]}}]), "output_dir is set by the grid"),
        (dict(grid=[{"axes": {"lam": [0.1]}, "decoding": {}}]), r"unknown key\(s\) \['decoding'\]"),
        (dict(sweeps={}), r"unknown key\(s\) \['sweeps'\]"),
        (dict(grid=[{"axes": {"method": ["mle"], "seed": [0]}},
                    {"axes": {"method": [{"name": "mle", "objective": "iqlearn"}], "seed": [0]}}]),
         "'mle/seed0' is planned twice with different fields"),  # fmt: skip
        (dict(grid=[]), "at least one sub-grid"),
        (dict(grid=[{"axes": {"lam": [0.1]}, "decodings": {"top_k": [5]}}]),
         r"decodings: only temperatures, top_p, min_p, beams, got .*'top_k'"),
    ],
)
def test_bad_grids_fail_naming_the_key(change, match):
    with pytest.raises(GridError, match=match):
        expand({**SPEC, **change})


def tiny_grid(tmp_path, seeds=(0, 1)) -> object:
    spec = {
        "output_dir": str(tmp_path / "g"),
        "base": dict(model="tiny", vocab_size=400, math_sizes=[64, 16, 16], max_length=160,
                     per_device_train_batch_size=4, max_steps=4, learning_rate=3e-3, warmup_steps=0,
                     logging_steps=1, eval_steps=0, save_steps=2),  # fmt: skip
        "methods": [{"name": "iq", "objective": "iqlearn", "lam": 0.1}],
        "grid": [{"axes": {"method": ["iq"], "seed": list(seeds)}}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_grid(path)


def test_grid_skips_finished_runs_and_resumes_an_interrupted_one(tmp_path):
    grid = tiny_grid(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # the first run is killed after step 3 (checkpoint-2 on disk)
        train_all(grid, callbacks=[CrashAt(3)])
    first = tmp_path / "g" / "iq" / "seed0"
    assert [p.name for p in checkpoints(first)] == ["checkpoint-2"]
    assert not (tmp_path / "g" / "iq" / "seed1").exists()
    assert train_all(grid) == {"iq/seed0": "resumed", "iq/seed1": "trained"}
    assert train_all(grid) == {"iq/seed0": "kept", "iq/seed1": "kept"}
    steps = [json.loads(line)["step"] for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(4) >= 1 and steps.count(3) == 1  # no step logged twice

    # the resumed run ends with the weights of the same run trained without interruption
    (tmp_path / "straight").mkdir()
    straight = tiny_grid(tmp_path / "straight", seeds=(0,))
    train_all(straight)
    a = load_file(str(last_checkpoint(first) / "model.safetensors"))
    b = load_file(str(last_checkpoint(tmp_path / "straight" / "g" / "iq" / "seed0") / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same process, same kernels: bit for bit

    # a finished run trained with other settings than the grid file now says is refused, not silently kept
    changed = tiny_grid(tmp_path)
    changed.points[0].values["learning_rate"] = 1e-2
    with pytest.raises(GridError, match=r"iq/seed0 was trained with other settings \(learning_rate: 0.003 there, 0.01"):
        train_all(changed)


def test_train_size_gives_nested_seeded_subsets():
    def train(**kw):
        return load_splits(TrainConfig(math_sizes=[40, 5, 5], **kw))

    full, small, large = train()["train"], train(train_size=5)["train"], train(train_size=20)["train"]
    assert len(full) == 40 and len(small) == 5 and len(large) == 20
    assert large[:5] == small  # nested: a smaller subset is a prefix of a larger one
    assert {ex["id"] for ex in large} <= {ex["id"] for ex in full}
    assert [ex["id"] for ex in large] != [ex["id"] for ex in full[:20]]  # shuffled, not the first 20
    assert train(train_size=5, data_seed=0)["test"] == train()["test"]  # held-out splits are untouched
    with pytest.raises(DataError, match="train_size=41, but the training split has 40 examples"):
        train(train_size=41)
    with pytest.raises(ConfigError, match="train_size=0"):
        TrainConfig(train_size=0)
    # validation_size: the first N validation examples, the same whatever the training subset
    cut = train(validation_size=3, train_size=5)
    assert cut["validation"] == train()["validation"][:3] and cut["train"] == small and cut["test"] == train()["test"]
    with pytest.raises(ConfigError, match="validation_size=0"):
        TrainConfig(validation_size=0)


def test_extract_rewards_on_text_data_scores_the_sweep_cell_and_the_pairs(tmp_path):
    """The grid's reward step on data other than the math task: the sweep cell's first `limit` prompts and a JSONL
    of preference pairs, through analysis.rewards.score_checkpoint, in the directories irl/runs.py names; a second
    call keeps them."""
    from analysis.sweep import sweep
    from findings.grid import extract_rewards
    from irl import runs
    from irl.train import train

    words = ["red", "green", "blue", "black", "white", "brown", "pink", "grey"]
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 24), ("validation", 4), ("test", 4)):
        rows = [{"prompt": f"Say {words[i % 8]} twice:", "completion": f" {words[i % 8]} {words[i % 8]}"}
                for i in range(n)]  # fmt: skip
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = tmp_path / "colours" / "pairs.jsonl"
    pairs.parent.mkdir()
    pairs.write_text(json.dumps({"prompt": "Say red twice:", "chosen": " red red", "rejected": " red blue"}) + "\n")
    run = tmp_path / "run"
    train(TrainConfig(output_dir=str(run), data=str(data), model="tiny", vocab_size=200, max_length=48,
                      per_device_train_batch_size=4, max_steps=2, warmup_steps=0, logging_steps=1, eval_steps=0,
                      save_steps=2))  # fmt: skip
    sweep([str(run)], "last", (1.0,), (), samples=2, split="test", limit=4, max_new_tokens=6)
    ckpt = last_checkpoint(run)
    settings = {"limit": 3, "n_boot": 10, "preferences": str(pairs)}
    assert extract_rewards(ckpt, "test", settings) == "extracted"
    cell = json.loads((runs.rewards_dir(ckpt, "test-t=1-3") / runs.SUMMARY_FILE).read_text())
    assert cell["counts"]["examples"] == 3 * 2  # the first 3 prompts, K = 2 samples each
    preferences = json.loads((runs.rewards_dir(ckpt, "colours-pairs") / runs.SUMMARY_FILE).read_text())
    assert preferences["counts"]["pairs"] == 1 and cell["gamma"] == preferences["gamma"] == 0.99
    assert extract_rewards(ckpt, "test", settings) == "kept"
