"""Tokenizer parity with `transformers`: the same ids on a few hundred varied strings, for every
kind of tokenizer file a Hugging Face folder holds, on import and after export."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
from hf_models import tiny, transformers
from hf_tokenizers import (
    BERT_SPECIALS,
    ROBERTA_SPECIALS,
    byte_level_folder,
    marian_folder,
    t5_folder,
    varied_strings,
    wordpiece_folder,
)

from triform.convert import ConversionError, convert_from_hf, export_hf, import_hf, load_hf_tokenizer

pytest.importorskip("sentencepiece")

FOLDERS = {
    "bert": (lambda d: wordpiece_folder(d), BERT_SPECIALS),
    "bert-cased": (
        lambda d: wordpiece_folder(d, {"tokenizer_class": "BertTokenizer", "do_lower_case": False}),
        BERT_SPECIALS,
    ),
    "gpt2": (lambda d: byte_level_folder(d, "gpt2"), ["<|endoftext|>"]),
    "gpt2-prefix-space": (
        lambda d: byte_level_folder(d, "gpt2", {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": True}),
        ["<|endoftext|>"],
    ),
    "roberta": (lambda d: byte_level_folder(d, "roberta"), ROBERTA_SPECIALS),
    "bart": (lambda d: byte_level_folder(d, "bart"), ROBERTA_SPECIALS),
    "t5": (lambda d: t5_folder(d), ["</s>", "<pad>", "<unk>", "<extra_id_0>", "<extra_id_41>"]),
}


def assert_same_ids(theirs, ours, strings, **options):
    mismatches = []
    for text in strings:
        for add_special_tokens in (True, False):
            expected = theirs(text, add_special_tokens=add_special_tokens, **options)["input_ids"]
            got = ours.encode(text, add_special_tokens=add_special_tokens).ids
            if got != expected:
                mismatches.append((text, expected, got))
    assert not mismatches, f"{len(mismatches)} of {2 * len(strings)} differ, first: {mismatches[0]}"


@pytest.fixture(scope="module", params=list(FOLDERS))
def vocabulary_folder(request, tmp_path_factory):
    build, specials = FOLDERS[request.param]
    return request.param, build(tmp_path_factory.mktemp(request.param)), specials


def test_vocabulary_files_give_transformers_ids(vocabulary_folder):
    _, folder, specials = vocabulary_folder
    assert not (folder / "tokenizer.json").exists()
    assert_same_ids(
        transformers.AutoTokenizer.from_pretrained(folder), load_hf_tokenizer(folder), varied_strings(tuple(specials))
    )


def test_tokenizer_json_gives_transformers_ids(vocabulary_folder, tmp_path):
    _, folder, specials = vocabulary_folder
    transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    assert_same_ids(
        transformers.AutoTokenizer.from_pretrained(tmp_path),
        load_hf_tokenizer(tmp_path),
        varied_strings(tuple(specials), seed=2),
    )


def marian_strings(seed: int) -> list[str]:
    # Marian takes a language code whole only at the very start of the text (documented difference).
    return varied_strings(("</s>", "<pad>", "<unk>"), seed=seed) + [">>fra<< Bonjour le monde", ">>fra<<quick"]


def marian_reference(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Recommended: pip install sacremoses", for a step Marian skips here
        return transformers.MarianTokenizer(
            *(str(folder / name) for name in ("source.spm", "target.spm", "vocab.json"))
        )


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    folder = marian_folder(tmp_path_factory.mktemp("marian"))
    return folder, marian_reference(folder)


def test_marian_source_and_target_give_transformers_ids(marian):
    folder, reference = marian
    assert_same_ids(reference, load_hf_tokenizer(folder), marian_strings(seed=3))
    target = load_hf_tokenizer(folder, side="target")
    assert_same_ids(lambda text, **o: reference(text_target=text, **o), target, marian_strings(seed=4))


def test_marian_decodes_target_ids_and_hides_target_pieces_from_the_source(marian):
    folder, _ = marian
    source, target = load_hf_tokenizer(folder), load_hf_tokenizer(folder, side="target")
    sentence = "fox the over jumps quick"
    ids = target.encode(sentence, add_special_tokens=False).ids
    assert source.decode(ids) == sentence  # generation writes target pieces; the source tokenizer reads them
    vocabulary = json.loads((folder / "vocab.json").read_text())
    hidden = [token for token in vocabulary if source.token_to_id(token) is None]
    assert hidden, "the target model should have pieces the source model lacks"
    assert all(source.token_to_id(" " + token) == vocabulary[token] for token in hidden)


def test_marian_piece_missing_from_the_vocabulary_is_refused(tmp_path):
    folder = marian_folder(tmp_path / "m")
    vocabulary = json.loads((folder / "vocab.json").read_text())
    del vocabulary["▁quick"]
    vocabulary = {token: index for index, token in enumerate(vocabulary)}
    (folder / "vocab.json").write_text(json.dumps(vocabulary))
    with pytest.raises(ConversionError, match=r"source\.spm: piece '▁quick' has no id in vocab\.json"):
        load_hf_tokenizer(folder)


def test_sentencepiece_without_its_packages_is_a_clear_error(tmp_path, monkeypatch):
    folder = t5_folder(tmp_path / "t5")
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(ConversionError, match=r"spiece\.model: reading a SentencePiece model needs the sentencepiece"):
        load_hf_tokenizer(folder)


def test_a_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConversionError, match="no tokenizer; expected tokenizer.json, vocab.txt"):
        load_hf_tokenizer(tmp_path)


@pytest.mark.parametrize(
    "family, build",
    [
        ("bert", wordpiece_folder),
        ("gpt2", lambda d: byte_level_folder(d, "gpt2")),
        ("bart", lambda d: byte_level_folder(d, "bart")),
        ("t5", t5_folder),
        ("marian", marian_folder),
    ],
)
def test_model_folders_bring_their_tokenizer_and_special_tokens_in_and_out(tmp_path, family, build):
    source = build(tmp_path / "hf")
    if family == "marian":
        reference_tokenizer = marian_reference(source)
    else:
        reference_tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    model = tiny(family)
    model.resize_token_embeddings(len(reference_tokenizer))
    for role in ("pad", "bos", "eos"):  # the model's config names the tokenizer's tokens, as a real folder does
        if getattr(reference_tokenizer, f"{role}_token_id", None) is not None:
            setattr(model.config, f"{role}_token_id", getattr(reference_tokenizer, f"{role}_token_id"))
    if family in DECODER_START:
        model.config.decoder_start_token_id = getattr(reference_tokenizer, f"{DECODER_START[family]}_token_id")
    model.save_pretrained(source)
    pretrained = convert_from_hf(source, tmp_path / "triform")
    specials = pretrained.specials
    expected = EXPECTED_SPECIALS[family](reference_tokenizer)
    assert {role: getattr(specials, role) for role in expected} == expected
    export_hf(import_hf(source), tmp_path / "out")
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    strings = varied_strings(n=60, seed=5)
    for text in strings:
        assert exported(text)["input_ids"] == reference_tokenizer(text)["input_ids"], text


DECODER_START = {"bart": "eos", "t5": "pad", "marian": "pad"}
EXPECTED_SPECIALS = {
    "bert": lambda t: dict(
        pad=t.pad_token_id,
        cls=t.cls_token_id,
        sep=t.sep_token_id,
        mask=t.mask_token_id,
        bos=t.cls_token_id,
        eos=t.sep_token_id,
        decoder_start=None,
    ),
    "gpt2": lambda t: dict(bos=t.eos_token_id, eos=t.eos_token_id, pad=t.eos_token_id, mask=None),
    "bart": lambda t: dict(
        bos=t.bos_token_id, eos=t.eos_token_id, pad=t.pad_token_id, mask=t.mask_token_id, decoder_start=t.eos_token_id
    ),
    "t5": lambda t: dict(
        pad=t.pad_token_id,
        eos=t.eos_token_id,
        unk=t.unk_token_id,
        bos=None,
        decoder_start=t.pad_token_id,
        sentinels=tuple(t.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(100)),
    ),
    "marian": lambda t: dict(pad=t.pad_token_id, eos=t.eos_token_id, unk=t.unk_token_id, decoder_start=t.pad_token_id),
}
