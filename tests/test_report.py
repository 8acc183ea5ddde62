"""The demo's reward tables: every definition per checkpoint with its intervals, and the one that tracks quality."""

from analysis import schema as S
from analysis.report import format_definitions


def _pairwise(accuracy: float) -> list[dict]:
    return [{"definition": d, "pairwise_accuracy": accuracy, "pairwise_low": accuracy - 0.1,
             "pairwise_high": accuracy + 0.1} for d in S.DEFINITIONS]  # fmt: skip


def _sampled(spearman: dict) -> dict:
    rows = [{"definition": d, "metric": "rougeLsum", "spearman": rho, "spearman_low": rho - 0.05,
             "spearman_high": rho + 0.05, "best_of_4_accuracy": 0.5, "best_of_4_low": 0.3, "best_of_4_high": 0.7}
            for d, rho in spearman.items()]  # fmt: skip
    return {"metric": "rougeLsum", "decoding": "t=1", "definitions": rows}


def test_every_definition_has_its_row_and_the_best_is_named():
    names = list(S.DEFINITIONS)
    mle = dict(zip(names, (0.10, 0.20, 0.05, 0.30, 0.15)))  # log π highest
    iq = dict(zip(names, (0.40, 0.20, 0.05, 0.30, 0.15)))  # r_t highest
    text = format_definitions({"mle": {"definitions": _pairwise(0.7)}, "iqlearn": {"definitions": _pairwise(0.6)}},
                              {"mle": _sampled(mle), "iqlearn": _sampled(iq)})  # fmt: skip
    lines = text.splitlines()
    assert "a random pick of 4 is right 0.25 of the time" in lines[0]
    rows = lines[2:-1]
    assert len(rows) == 2 * len(names)
    assert rows[0].split() == ["mle", "r_t", "0.700", "[0.600,", "0.800]", "0.100", "[0.050,", "0.150]", "0.500",
                               "[0.300,", "0.700]"]  # fmt: skip
    assert lines[-1] == "Highest Spearman with quality: mle log π; iqlearn r_t"
