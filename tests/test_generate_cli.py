"""`triform generate`, `translate` and `fill-mask`: inputs from an argument, a file or stdin, one
output per line or JSONL, and one-line errors for bad input."""

import io
import json
import subprocess
import sys

import pytest
from text_models import random_model, single_thread, trained_masked_lm, word_setup  # noqa: F401

from triform.checkpoint import save_model
from triform.cli import main
from triform.generate import TextGenerator

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = ["one two three", "red", "the cat sat on"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tokenizer, specials = word_setup()
    save_model(
        random_model("stack", tokenizer),
        root / "gpt",
        specials=specials,
        tokenizer=tokenizer,
        extra={"objective": "clm", "pattern": "causal"},
    )
    save_model(random_model("encoder-decoder", tokenizer), root / "translator", specials=specials, tokenizer=tokenizer)
    model, tokenizer, specials = trained_masked_lm()
    save_model(model, root / "bert", specials=specials, tokenizer=tokenizer, extra={"objective": "mlm"})
    return root


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_from_an_argument_matches_the_python_api(folders, capsys):
    code, out, _ = run(["generate", "--model", str(folders / "gpt"), "one two three", "--max_new_tokens", "5"], capsys)
    expected = TextGenerator.load(folders / "gpt").generate("one two three", max_new_tokens=5).text
    assert code == 0 and out == expected + "\n"


def test_generate_reads_a_file_and_writes_one_line_per_prompt_or_jsonl(folders, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    options = ["--max_new_tokens", "6", "--do_sample", "true", "--seed", "4", "--batch_size", "2"]
    code, out, err = run(["generate", "--model", str(folders / "gpt"), "--input", str(prompts), *options], capsys)
    expected = TextGenerator.load(folders / "gpt").generate(PROMPTS, max_new_tokens=6, do_sample=True, seed=4)
    assert code == 0 and out.splitlines() == [g.text for g in expected]
    assert "3/3 inputs" in err and "tokens/s" in err
    code, out, _ = run(
        ["generate", "--model", str(folders / "gpt"), "--input", str(prompts), "--jsonl", "--quiet", *options], capsys
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in records] == PROMPTS and [r["text"] for r in records] == [g.text for g in expected]
    assert {r["finish_reason"] for r in records} <= {"eos", "length"} and all(r["n_tokens"] <= 6 for r in records)


def test_generate_reads_stdin_and_writes_an_output_file(folders, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out.txt"
    argv = [
        "generate",
        "--model",
        str(folders / "gpt"),
        "--num_beams",
        "3",
        "--num_return_sequences",
        "2",
        "--max_new_tokens",
        "4",
        "--output",
        str(output),
        "--quiet",
    ]
    code, out, _ = run(argv, capsys, stdin="one two\nred\n", monkeypatch=monkeypatch)
    assert code == 0 and out == ""
    expected = TextGenerator.load(folders / "gpt").generate(
        ["one two", "red"], max_new_tokens=4, num_beams=3, num_return_sequences=2
    )
    assert output.read_text().splitlines() == [g.text for g in expected]  # the 2 best of each, in order


def test_generate_streams_and_cuts_at_a_stop_string(folders, capsys):
    base = ["generate", "--model", str(folders / "gpt"), "one two three", "--max_new_tokens", "8"]
    _, full, _ = run(base, capsys)
    stop = full.split()[3]
    code, streamed, _ = run(base + ["--stream", "--stop", f'["{stop}", "\\\\n"]'], capsys)
    assert code == 0 and streamed == full[: full.find(stop)] + "\n"


def test_translate_keeps_one_line_per_source_and_empty_lines_empty(folders, tmp_path, capsys):
    sources = tmp_path / "sources.txt"
    sources.write_text("one two three\n\nred green\n")
    code, out, _ = run(
        [
            "translate",
            "--model",
            str(folders / "translator"),
            "--input",
            str(sources),
            "--max_new_tokens",
            "5",
            "--quiet",
        ],
        capsys,
    )
    expected = TextGenerator.load(folders / "translator").generate(
        ["one two three", "red green"], max_new_tokens=5, num_beams=4
    )
    assert code == 0 and out.split("\n") == [expected[0].text, "", expected[1].text, ""]


def test_a_translation_is_bounded_by_its_sources_length(folders, capsys):
    """As Marian's --max-length-factor: at most 1.5 x the source's tokens + 10 by default, so that a
    model that never ends (min_new_tokens forbids [EOS] here) cannot spend max_new_tokens on one word."""
    base = ["translate", "--model", str(folders / "translator"), "--jsonl", "--quiet", "--num_beams", "1"]
    base += ["--max_new_tokens", "60", "--min_new_tokens", "60"]
    for source, n_source in (("red", 1), ("one two three four five six seven eight", 8)):
        code, out, _ = run([*base, source], capsys)
        assert code == 0 and json.loads(out)["n_tokens"] == min(60, -(-3 * n_source // 2) + 10)
    code, out, _ = run([*base, "red", "--max_length_factor", "3"], capsys)
    assert code == 0 and json.loads(out)["n_tokens"] == 13
    code, out, _ = run([*base, "red", "--max_length_factor", "null"], capsys)
    assert code == 0 and json.loads(out)["n_tokens"] == 60  # unbounded: the whole budget


def test_fill_mask_prints_candidates_with_probabilities(folders, capsys):
    code, out, _ = run(
        ["fill-mask", "--model", str(folders / "bert"), "the cat sat on the [MASK]", "--top_k", "2"], capsys
    )
    assert code == 0 and out.startswith("mat 0.")
    code, out, _ = run(["fill-mask", "--model", str(folders / "bert"), "a [MASK] ran in the [MASK]", "--jsonl"], capsys)
    masks = json.loads(out)["masks"]
    assert [m[0]["token"] for m in masks] == ["dog", "park"] and len(masks[0]) == 5


def test_generate_with_a_masked_lm_runs_mask_predict(folders, capsys):
    code, out, _ = run(
        ["generate", "--model", str(folders / "bert"), "a dog", "--length", "4", "--iterations", "4"], capsys
    )
    assert code == 0 and out == "a dog ran in the park\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", "{folders}/missing", "hi"], "missing/config.json: not found"),
        (["generate", "--model", "{folders}/gpt", "--input", "{folders}/none.txt"], "none.txt: not found"),
        (["generate", "--model", "{folders}/gpt", "hi", "--input", "x"], "as an argument or with --input, not both"),
        (
            ["generate", "--model", "{folders}/gpt", "hi", "--num_beams", "2", "--do_sample", "true"],
            "generation.do_sample",
        ),
        (["generate", "--model", "{folders}/gpt", "hi", "--stream", "--num_beams", "2"], "streaming works with greedy"),
        (["generate", "--model", "{folders}/gpt", "hi", "--stream", "--jsonl"], "--stream prints plain text"),
        (["generate", "--model", "{folders}/gpt", "hi", "--length", "3"], "--length is for models trained with mlm"),
        (["generate", "--model", "{folders}/bert", "a", "--length", "3", "--num_beams", "2"], "decoding options"),
        (["translate", "--model", "{folders}/gpt", "hi"], "translate needs a source -> target model"),
        (["generate", "--model", "{folders}/gpt", "hi", "--max_length_factor", "2"], "this model continues text"),
        (["translate", "--model", "{folders}/translator", "hi", "--max_length_factor", "0"], "max_length_factor"),
        (["fill-mask", "--model", "{folders}/bert", "no mask here"], "argument: no [MASK] to fill"),
        (["fill-mask", "--model", "{folders}/gpt", "a [MASK]"], "fill-mask needs a stack trained with mlm"),
    ],
)
def test_bad_input_is_one_line_naming_what_is_wrong(folders, capsys, argv, message):
    code, out, err = run([a.format(folders=folders) for a in argv], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1 and message in err


def test_a_bad_line_is_named_and_nothing_is_written(folders, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"one\ntwo\n" + b"red " * 70 + b"\n")
    output = tmp_path / "out.txt"
    output.write_text("previous results\n")
    argv = ["generate", "--model", str(folders / "gpt"), "--input", str(prompts), "--output", str(output)]
    code, _, err = run(argv, capsys)
    assert code == 1 and f"{prompts}: line 3: 70 tokens leave no room" in err
    assert output.read_text() == "previous results\n"  # untouched
    prompts.write_bytes(b"one\n\xff\xfe\n")
    code, _, err = run(argv, capsys)
    assert code == 1 and f"{prompts}: line 2: not UTF-8" in err
    code, out, _ = run(argv[:-2] + ["--truncate", "--quiet"], capsys)
    assert code == 1  # the undecodable line still fails
    prompts.write_bytes(b"one\ntwo\n" + b"red " * 70 + b"\n")
    code, out, err = run(argv[:-2] + ["--truncate", "--max_new_tokens", "2"], capsys)
    assert code == 0 and len(out.splitlines()) == 3 and "shortened 1 input(s)" in err


def test_the_installed_command_runs(folders):
    completed = subprocess.run(
        [sys.executable, "-m", "triform", "generate", "--model", str(folders / "gpt"), "--max_new_tokens", "3"],
        input="one\ntwo\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(completed.stdout.splitlines()) == 2
