import subprocess
import sys

import pytest

from triform.cli import main
from triform.objectives.compat import allowed_triples, refused_triples


@pytest.mark.parametrize("arch, objective, pattern", allowed_triples())
def test_inspect_every_allowed_pair(arch, objective, pattern, capsys):
    argv = ["inspect", "--arch", arch, "--objective", objective, "--pattern", pattern, "--text", "I am going home ."]
    if objective == "seq2seq":
        argv += ["--target", "ich gehe nach Hause"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{arch} + {objective} + {pattern}:")
    assert "target" in out and "■" in out
    if pattern == "causal":
        assert "■ ·" in out  # something is hidden from some query


def test_inspect_shows_the_mlm_example():
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "triform",
            "inspect",
            "--arch",
            "stack",
            "--objective",
            "mlm",
            "--text",
            "I am going home",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "[MASK]" in completed.stdout and "[CLS]" in completed.stdout


def test_inspect_refuses_a_leaking_pair_in_one_line(capsys):
    arch, objective, pattern = refused_triples()[0]
    assert main(["inspect", "--arch", arch, "--objective", objective, "--pattern", pattern, "--text", "a b"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is refused" in error


def test_seq2seq_without_target_is_a_clear_error(capsys):
    assert main(["inspect", "--objective", "seq2seq", "--text", "a b"]) == 1
    assert "needs a target text (--target)" in capsys.readouterr().err


def test_presets_and_pairs_list(capsys):
    assert main(["presets"]) == 0 and "tiny-bert" in capsys.readouterr().out
    assert main(["pairs", "--refused"]) == 0 and "refused  stack + clm + bidirectional" in capsys.readouterr().out


@pytest.mark.parametrize("arch, objective, pattern", [t for t in allowed_triples() if t[1] != "seq2seq"])
def test_inspect_packs_two_documents_and_shows_each_alone(arch, objective, pattern, capsys):
    argv = ["inspect", "--arch", arch, "--objective", objective, "--pattern", pattern]
    assert main([*argv, "--text", "I am going home", "--then", "She reads"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{arch} + {objective} + {pattern}, each document alone:")
    assert "document " in out and "within each document" in out
    matrix = [line for line in out.splitlines() if line.strip().startswith(("0 ", "1 ")) and "■" in line]
    assert matrix and all(
        line.rstrip().endswith("·") for line in matrix[:1]
    )  # the first token never sees the second text
    assert main([*argv, "--text", "I am going home", "--then", "She reads", "--pack", "stream"]) == 0
    out = capsys.readouterr().out
    assert "the documents as one stream" in out and "document " not in out


def test_inspect_never_packs_pairs(capsys):
    argv = ["inspect", "--objective", "seq2seq", "--text", "a b", "--target", "c", "--then", "d"]
    assert main(argv) == 1
    assert "never packed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, argv, said",
    [
        (b"the cat sat\n", ["train", "--data", "{file}"], "--data {file}: not a YAML or JSON mapping; "),
        (b"\x00\xff\xfe", ["train", "--data={file}"], "--data {file}: undecodable bytes at offset 1; expected UTF-8"),
        (b"\x00\xff\xfe", ["train", "--config", "{file}"], "--config {file}: undecodable bytes at offset 1;"),
        (None, ["finetune", "--optim", "{file}"], "--optim {file}: not a YAML or JSON mapping, and no such file;"),
        (None, ["train", "--config", "{file}.yaml"], "--config {file}.yaml: no such file; --config takes a TOML"),
        ("folder", ["train", "--data", "{file}"], "--data {file}: a folder, not a YAML or JSON file; "),
    ],
    ids=["text", "bytes", "config-bytes", "missing", "missing-yaml", "folder"],
)
def test_a_section_option_given_a_corpus_or_bytes_says_what_it_takes_in_one_line(content, argv, said, tmp_path, capsys):
    """`--data corpus.txt` for `--data.train corpus.txt`: jsonargparse said 'Unable to load config',
    or, for bytes that are not UTF-8, raised."""
    file = tmp_path / "corpus.txt"
    if content == "folder":
        file.mkdir()
    elif content is not None:
        file.write_bytes(content)
    assert main([part.format(file=file) for part in argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"triform {argv[0]}: error: {said.format(file=file)}") and "\n" not in error
    if argv[1] != "--config":
        assert f"to set one, pass {argv[1].split('=')[0]}." in error


def test_a_section_given_as_an_inline_mapping_or_a_yaml_file_is_read(tmp_path):
    """What the check lets through, jsonargparse reads: the run's resolved configuration shows it."""
    from triform.cli import build_parser, misread_section

    (tmp_path / "optim.yaml").write_text("lr: 0.002\n")
    parser = build_parser()
    for value in ['{"lr": 0.002}', str(tmp_path / "optim.yaml")]:
        argv = ["train", "--optim", value, "--data.train", "corpus.txt"]
        assert misread_section(parser, argv) is None
        assert parser.parse_args(argv).train.optim.lr == 0.002


@pytest.mark.parametrize("command", [["generate", "hi"], ["translate", "hi"], ["fill-mask", "a [MASK]"], ["predict"]])
def test_an_output_that_cannot_be_written_fails_before_the_model_is_read(command, tmp_path, capsys):
    """The model named does not exist: its error would come first if the output were checked after."""
    (tmp_path / "a-file").write_text("kept")
    output = tmp_path / "a-file" / "out.txt"
    argv = [command[0], "--model", str(tmp_path / "no-model"), "--output", str(output), *command[1:]]
    if command[0] == "predict":
        argv += ["--data", str(tmp_path / "records.jsonl")]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error == (
        f"triform {command[0]}: error: --output {output}: cannot be written "
        f"(a file where a folder is needed: '{tmp_path / 'a-file'}')"
    )


def test_a_folder_output_may_exist_and_a_file_output_may_not_be_a_folder(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "no-model"), "--output", str(tmp_path), "hi"]) == 1
    assert f"--output {tmp_path}: cannot be written (a folder where a file is to be written" in capsys.readouterr().err
    assert main(["merge", "--model", str(tmp_path / "no-model"), "--adapter", "x", "--output", str(tmp_path)]) == 1
    assert "--output" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "address, said",
    [
        (["--port", "-5"], "--port -5: expected a port from 0 to 65535"),
        (["--port", "{taken}"], "--host 127.0.0.1 --port {taken}: cannot listen there (Address already in use)"),
        (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: "),
    ],
    ids=["range", "taken", "host"],
)
def test_serve_refuses_an_address_it_cannot_listen_on_before_loading_a_model(address, said, tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        argv = ["serve", "--model", str(tmp_path / "no-model"), *[part.format(taken=port) for part in address]]
        assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"triform serve: error: {said.format(taken=port)}") and "\n" not in error


@pytest.mark.parametrize("command", [["convert", "--from-hf", "hf"], ["demo"], ["compare", "--data", "corpus.txt"]])
def test_a_folder_named_by_out_may_be_named_by_output_as_in_every_other_command(command):
    from triform.cli import build_parser

    parser = build_parser()
    for flag in ("--out", "--output"):
        assert parser.parse_args([*command, flag, "somewhere"])[command[0]].out == "somewhere"


def test_a_device_this_torch_cannot_use_is_one_line_before_the_model_is_read(tmp_path, capsys):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    beyond = f"cuda:{count}" if count else "cuda"
    said = f"torch sees {count} CUDA device(s)" if count else "torch sees no CUDA device"
    cases = {"tpu": "not a torch device; expected cpu, cuda", "meta": "holds no data", beyond: said}
    for device, reason in cases.items():
        for command in (["generate", "hi"], ["serve"], ["predict", "--data", "records.jsonl"]):
            argv = [command[0], "--model", str(tmp_path / "no-model"), "--device", device, *command[1:]]
            assert main(argv) == 1
            error = capsys.readouterr().err.strip()
            assert error.startswith(f"triform {command[0]}: error: --device {device}: {reason}"), error


@pytest.mark.parametrize(
    "argv, said",
    [
        (["train", "--train.steps", "abc"], "train.steps: expected an integer, got 'abc'"),
        (["train", "--model.dropout", "x"], "model.dropout: expected a number or null, got 'x'"),
        (["train", "--train.precision", "fp8"], "train.precision: expected one of auto, bf16, fp32, got 'fp8'"),
        (["generate", "--do_sample", "maybe"], "do_sample: expected true or false, got 'maybe'"),
        (["train", "--nosuch"], "unrecognized arguments: --nosuch"),
    ],
)
def test_a_misspelt_option_or_value_is_one_line_without_the_usage(argv, said, capsys):
    """jsonargparse printed the command's whole usage (sixty lines for train) above a two-line error."""
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"triform {argv[0]}: error: {said} (`triform {argv[0]} --help` lists the options)"


def test_help_still_prints_the_usage_and_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0 and "--train.steps" in capsys.readouterr().out


def test_a_missing_validation_file_is_named_by_its_field_before_anything_is_trained(tmp_path, capsys):
    from training_helpers import train_args, write_text

    corpus = write_text(tmp_path / "corpus.txt")
    missing = tmp_path / "valid.txt"
    assert main(train_args(tmp_path / "run", corpus, missing, 2)) == 1
    said = f"triform train: error: data.valid: {missing}: no such file or folder, and no file matches it as a glob"
    assert capsys.readouterr().err.strip().splitlines()[-1] == said
    assert not (tmp_path / "run").exists()  # no tokenizer trained, nothing written
