"""`triform demo` at its quick size: each model learns its task, and the report and pictures are
written whole. `triform inspect --png` draws the same pictures."""

from __future__ import annotations

import json
import re

import pytest
from text_models import single_thread  # noqa: F401 (fixture)

from triform.cli import main
from triform.demo import run_demo
from triform.errors import TriformError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, single_thread):  # noqa: F811
    out = tmp_path_factory.mktemp("demo") / "report"
    lines = []
    outcomes = run_demo(out, size="quick", show=lines.append, progress=False)
    return out, {o.model.key: o for o in outcomes}, "\n".join(lines)


def test_each_model_learned_its_task(demo):
    _, outcomes, _ = demo
    assert list(outcomes) == ["gpt", "bert", "translator", "crossover"]
    # Each model against a guess that ignores the context (the training text's token frequencies),
    # scored at the same held-out tokens: what it gains over that guess, it learned from the context.
    gpt = outcomes["gpt"].metrics
    assert gpt["perplexity"] < 0.5 * gpt["context-free perplexity"] < gpt["uniform perplexity"]
    assert gpt["next-token accuracy"] > gpt["context-free accuracy"] + 0.05
    for key in ("bert", "crossover"):  # a few hundred steps of 15 % masks: a smaller but real gain
        masked = outcomes[key].metrics
        assert masked["scored tokens"] > 500
        assert masked["perplexity"] < 0.95 * masked["context-free perplexity"]
        assert masked["masked-token accuracy"] >= masked["context-free accuracy"]
    assert outcomes["translator"].metrics["exact-match accuracy"] >= 0.6  # held-out numbers, greedy decoding


def test_it_shows_what_each_model_does(demo):
    _, outcomes, printed = demo
    assert [row["prompt"] for row in outcomes["gpt"].examples][:2] == ["Return the", "If the file"]
    assert all(row["greedy"] for row in outcomes["gpt"].examples)
    fills = outcomes["bert"].examples
    assert fills and all(row["text"].count("[MASK]") == 1 and len(row["top"]) == 3 for row in fills)
    assert [row["text"] for row in fills] == [row["text"] for row in outcomes["crossover"].examples]
    translations = outcomes["translator"].examples
    assert sum(row["correct"] for row in translations) >= len(translations) // 2
    assert "[4/4] cross-over: stack + mlm + causal" in printed and "translated exactly" in printed


def test_the_report_and_its_pictures_are_valid(demo):
    out, outcomes, _ = demo
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    pictures = re.findall(r"src=['\"]([^'\"]+)['\"]", html)
    assert sorted(pictures) == sorted([f"{key}-attention.png" for key in outcomes] + ["losses.png"])
    for name in pictures:
        assert (out / name).read_bytes()[:8] == PNG
    summary = json.loads((out / "demo.json").read_text())
    assert [m["key"] for m in summary["models"]] == list(outcomes)
    learned = {m["key"]: m["learned"] for m in summary["models"]}
    assert learned["gpt"] and learned["translator"]  # the masked models' bar is higher than this run reaches
    assert not (out / ".demo").exists()
    for outcome in outcomes.values():  # trained by `triform train`'s code: a model folder and metrics
        assert (outcome.run_dir / "model" / "model.safetensors").is_file()
        assert (outcome.run_dir / "metrics.jsonl").is_file()


def test_a_new_demo_replaces_its_own_folder_but_no_other(demo, tmp_path):
    out, _, _ = demo
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(TriformError, match="not a demo's"):
        run_demo(tmp_path / "notes", size="quick", show=lambda line: None)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
    with pytest.raises(TriformError, match="--crossover"):
        run_demo(tmp_path / "other", crossover="nothing", show=lambda line: None)
    assert not (tmp_path / "other").exists()


def test_inspect_draws_the_pattern_into_a_png(tmp_path, capsys):
    path = tmp_path / "span.png"
    assert (
        main(
            [
                "inspect",
                "--arch",
                "encoder-decoder",
                "--objective",
                "span",
                "--text",
                "I am going home today",
                "--png",
                str(path),
            ]
        )
        == 0
    )
    assert path.read_bytes()[:8] == PNG
    assert f"picture: {path}" in capsys.readouterr().out
    assert main(["inspect", "--objective", "clm", "--text", "a b c", "--png", str(tmp_path / "x.jpg")]) == 1
    assert "should end in .png" in capsys.readouterr().err
    assert not (tmp_path / "x.jpg").exists()


@pytest.mark.parametrize("arch, objective", [("stack", "span"), ("encoder-decoder", "denoise"), ("stack", "mlm")])
def test_inspect_draws_two_packed_documents(tmp_path, capsys, arch, objective):
    path = tmp_path / "packed.png"
    argv = ["inspect", "--arch", arch, "--objective", objective, "--text", "I am going home today"]
    assert main([*argv, "--then", "She reads a book", "--png", str(path)]) == 0
    assert path.read_bytes()[:8] == PNG


def test_the_picture_of_a_packed_row_shows_the_pattern_within_each_document():
    from triform.explain import prepared_example, self_attention
    from triform.pictures import prefix_slots

    batch, _ = prepared_example("stack", "prefix-lm", "a b c d", then="e f g", seed=3)
    mask = self_attention(batch)
    first = batch.documents[0] == 0
    assert not mask[first][:, ~first].any() and not mask[~first][:, first].any()
    inside = prefix_slots(batch, 0, batch.ids.shape[1])
    assert sum(inside) == int(batch.prefix_lengths[0].sum())  # each document's own prefix is shaded


def test_pictures_show_byte_level_tokens_as_readable_text():
    from triform.data.tokenizers import train_tokenizer
    from triform.pictures import display_names

    # Few merges: 'ß' and 'ü' (two bytes each in UTF-8) stay split over two tokens.
    tokenizer = train_tokenizer(["dreißig fünf und zwanzig"] * 20, "bpe", 262, n_sentinels=2)
    ids = tokenizer.encode("dreißig fünf", add_special_tokens=False).ids
    assert len(ids) > len("dreißig fünf") // 2  # still in small pieces
    specials = [tokenizer.token_to_id(t) for t in ("[BOS]", "<extra_id_0>", "[EOS]")]
    names = display_names(tokenizer)([specials[0], *ids, specials[1], specials[2]])
    assert names[0] == "[BOS]" and names[-2:] == ["<extra_id_0>", "[EOS]"]
    assert "·" in names  # a token holding only the first byte of a character
    assert "".join(name for name in names[1:-2] if name != "·").replace("▁", " ") == "dreißig fünf"
    assert not {"Ã", "Ł", "Ġ"} & set("".join(names))
