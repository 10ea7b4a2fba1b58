"""The data of a comparison, made once and shared by every run: a tokenizer, the text and the
restore pairs, tokenized into prepared (memory-mapped) corpora, and the labelled records if any."""

from __future__ import annotations

import json
from pathlib import Path

from triform.compare.heldout import restore_pairs
from triform.compare.labelled import split_labelled
from triform.data.readers import DataSource
from triform.data.shards import prepare
from triform.data.tokenizers import load_tokenizer, save_tokenizer, train_tokenizer
from triform.demo.data import sampled_documents, split_every
from triform.errors import TriformError
from triform.io import atomic_write, write_lines

SENTINELS = 32  # span corruption of a 64-token window needs a handful


def split_documents(settings) -> tuple[list[str], list[str]]:
    documents = sampled_documents(settings.data, settings.documents, settings.seed)
    if settings.valid:
        return documents, sampled_documents(settings.valid, max(settings.documents // 10, 1), settings.seed)
    return split_every(documents, settings.data, "a comparison")


def prepare_data(settings, folder: Path, show) -> dict:
    """The prepared data; a continued comparison (same settings, checked by the caller) reuses it."""
    made = folder / "data.json"
    if made.is_file():
        return json.loads(made.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    show(f"reading {settings.data}" + (f" and {settings.valid}" if settings.valid else "") + " ...")
    train, valid = split_documents(settings)
    tokenizer_path = folder / "tokenizer.json"
    if tokenizer_path.is_file():  # a continued comparison keeps the tokenizer its runs were trained with
        tokenizer = load_tokenizer(tokenizer_path)
    else:
        tokenizer = train_tokenizer(train, "bpe", settings.vocab_size, n_sentinels=SENTINELS)
        save_tokenizer(tokenizer, tokenizer_path)
    paths = {"tokenizer": str(tokenizer_path)}
    for name, documents in (("train", train), ("valid", valid)):
        text = write_lines(folder / f"text-{name}.txt", documents)
        pairs = restore_pairs(documents)
        if not pairs:
            raise TriformError(
                f"--data: no sentence of 4 to 20 words with capitals or punctuation to restore in the {name} split"
            )
        tsv = write_lines(folder / f"restore-{name}.tsv", [f"{source}\t{target}" for source, target in pairs])
        paths[f"text_{name}"] = str(prepare(DataSource(str(text)), tokenizer, folder / f"text-{name}"))
        paths[f"pairs_{name}"] = str(
            prepare(DataSource(str(tsv), format="tsv"), tokenizer, folder / f"restore-{name}", parallel=True)
        )
        paths[f"{name}_documents"] = len(documents)
        paths[f"{name}_pairs"] = len(pairs)
    if settings.labels:
        paths.update(split_labelled(settings, folder, show))
    atomic_write(made, json.dumps(paths, indent=1))
    show(
        f"{paths['train_documents']:,} training documents, {paths['valid_documents']:,} held out; "
        f"{paths['train_pairs']:,} restore pairs for fine-tuning, {paths['valid_pairs']:,} held out"
        + (
            f"; {paths['labels_train_records']:,} labelled records ({paths['labels']} labels) for fine-tuning, "
            f"{paths['labels_valid_records']:,} held out"
            if settings.labels
            else ""
        )
    )
    return paths
