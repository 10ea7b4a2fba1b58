"""The architecture x objective x pattern table is code; each refusal says why, before any compute."""

from pathlib import Path

import pytest
from conftest import SPECIALS, VOCAB_SIZE

from triform.errors import IncompatiblePair
from triform.objectives import make_objective
from triform.objectives.compat import OBJECTIVES, allowed_triples, check_pair, markdown_table, refusal, refused_triples

README = Path(__file__).parent.parent / "README.md"


@pytest.mark.parametrize("arch, objective, pattern", refused_triples())
def test_each_refused_pair_is_refused_with_its_reason(arch, objective, pattern, monkeypatch):
    import triform.objectives.base as base

    def no_compute(*args, **kwargs):
        raise AssertionError("an objective was built for a refused pair")

    monkeypatch.setattr(base.Objective, "prepare", no_compute)
    with pytest.raises(IncompatiblePair) as error:
        make_objective(objective, SPECIALS, VOCAB_SIZE, arch=arch, pattern=pattern)
    message = str(error.value)
    assert refusal(arch, objective, pattern) in message and "\n" not in message


def test_the_leaking_pairs_the_design_names_are_refused():
    with pytest.raises(IncompatiblePair, match="bidirectional pattern lets every position see it"):
        check_pair("stack", "clm", "bidirectional")


def test_the_cross_overs_the_design_names_are_allowed():
    assert check_pair("stack", "mlm", "causal") == "causal"
    assert check_pair("encoder-decoder", "clm") == "causal"
    assert check_pair("stack", "seq2seq") == "prefix"


def test_every_triple_is_either_allowed_or_refused():
    assert len(allowed_triples()) + len(refused_triples()) == 2 * len(OBJECTIVES) * 3
    assert not set(allowed_triples()) & set(refused_triples())


def test_readme_shows_the_table_the_code_enforces():
    assert markdown_table() in README.read_text()
