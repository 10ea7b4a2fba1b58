"""`triform prepare`: tokenize a corpus once into memory-mapped token shards.

A prepared folder holds `meta.json` and, per shard, numpy files read back with `mmap_mode="r"`, so
a corpus larger than RAM trains without being loaded. Input is streamed; each finished shard is
committed to a hidden staging folder (triform.io.atomic_dir with `resume`) with the count of records
it consumed, so an interrupted run continues where it stopped when rerun. The folder appears under its
name only when complete; bad input removes the staging folder, leaving nothing behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from triform.data.corpus import Corpus, Documents, Shard, ShardBuilder, batched, token_dtype
from triform.data.readers import DataError, DataSource, read_records, resolve_files
from triform.data.tokenizers import fingerprint
from triform.errors import TriformError
from triform.io import atomic_dir, atomic_write
from triform.progress import Throttle, count, duration, say
from triform.vocab import SpecialTokens

FORMAT, VERSION, META = "triform-shards", 1, "meta.json"
STATE = "state.json"  # in the staging folder: shards done and records consumed


def is_prepared(path: str | os.PathLike) -> bool:
    return (Path(path) / META).is_file()


def input_key(source: DataSource, parallel: bool, tokenizer) -> str:
    """What must be unchanged for a staging folder to be continued: input files, options, tokenizer."""
    files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in resolve_files(source.path)]
    if source.target_path:
        files += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in resolve_files(source.target_path)]
    text = json.dumps([source.__dict__, parallel, files, fingerprint(tokenizer)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def shard_files(index: int, parallel: bool) -> dict[str, str]:
    names = {"tokens": f"tokens-{index:05d}.npy", "ends": f"ends-{index:05d}.npy"}
    if parallel:
        names.update(
            target_tokens=f"target-tokens-{index:05d}.npy",
            target_ends=f"target-ends-{index:05d}.npy",
            origins=f"origins-{index:05d}.npy",
        )
    return names


def write_shard(folder: Path, index: int, shard: Shard) -> dict:
    arrays = {"tokens": shard.documents.tokens, "ends": shard.documents.ends}
    if shard.targets is not None:
        arrays.update(target_tokens=shard.targets.tokens, target_ends=shard.targets.ends, origins=shard.origins)
    for key, name in shard_files(index, shard.targets is not None).items():
        atomic_write(folder / name, functools.partial(save_array, array=arrays[key]))
    return {
        "documents": len(shard.documents),
        "tokens": shard.n_tokens,
        "target_tokens": int(shard.targets.ends[-1]) if shard.targets is not None and len(shard.targets) else 0,
    }


def save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # a file, not a name: np.save would add ".npy" to a name without it
        np.save(file, array)


def prepare(
    source: DataSource,
    tokenizer,
    output: str | os.PathLike,
    *,
    parallel: bool = False,
    shard_tokens: int = 2**26,
    overwrite: bool = False,
) -> Path:
    """Tokenize `source` into shards under `output`; returns the folder. Reruns continue."""
    output = Path(output)
    key = input_key(source, parallel, tokenizer)
    if is_prepared(output):
        meta = json.loads((output / META).read_text())
        if meta.get("input_key") == key and not overwrite:
            say(f"prepare: {output} is up to date ({meta['documents']} documents, {meta['tokens']} tokens)")
            return output
        if not overwrite:
            raise TriformError(
                f"{output}: already holds prepared data from other input; pass --overwrite to replace it"
            )
    elif output.exists() and any(output.iterdir()):
        raise TriformError(f"{output}: exists and is not a prepared corpus; choose another --output")
    # The staging folder survives an interrupt (or a crash) to be continued; bad input removes it.
    with atomic_dir(output, resume=True, discard=(DataError,)) as staging:
        state = load_state(staging, key)
        try:
            meta = fill_shards(source, tokenizer, staging, state, parallel, shard_tokens)
        except KeyboardInterrupt:
            done = len(state["shards"])
            say(f"prepare: interrupted after {done} complete shards; rerun the same command to continue")
            raise
        meta.update(
            format=FORMAT,
            version=VERSION,
            input_key=key,
            kind="parallel" if parallel else "text",
            tokenizer_sha256=fingerprint(tokenizer),
            vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
            dtype=str(token_dtype(tokenizer.get_vocab_size(with_added_tokens=True))),
            source=str(source.path),
        )
        (staging / META).write_text(json.dumps(meta, indent=2) + "\n")
        (staging / STATE).unlink()
    return output


def load_state(staging: Path, key: str) -> dict:
    if (staging / STATE).is_file():
        state = json.loads((staging / STATE).read_text())
        if state.get("input_key") == key:
            say(f"prepare: continuing after {state['records']} records ({len(state['shards'])} shards done)")
            return state
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = {"input_key": key, "records": 0, "shards": [], "files": []}
    save_state(staging, state)
    return state


def save_state(staging: Path, state: dict) -> None:
    atomic_write(staging / STATE, json.dumps(state))


def fill_shards(source: DataSource, tokenizer, staging: Path, state: dict, parallel: bool, shard_tokens: int) -> dict:
    specials = SpecialTokens.from_tokenizer(tokenizer)
    builder = ShardBuilder(tokenizer, "parallel" if parallel else "text", specials.eos)
    for name in state["files"]:  # keep file indices stable across a continued run
        builder.files.setdefault(name, len(builder.files))
    inputs = resolve_files(source.path) + (resolve_files(source.target_path) if source.target_path else [])
    total_bytes = sum(p.stat().st_size for p in inputs)  # aligned target files are read too
    throttle, seen_bytes, skipped = Throttle(), 0, state["records"]
    start = time.monotonic()
    records = read_records(source, parallel=parallel)
    for batch in batched(records):
        seen_bytes += sum(
            len(r.text.encode()) + 1 + (len(r.target.encode()) + 1 if r.target is not None else 0) for r in batch
        )
        if skipped:  # consumed by a previous, interrupted run
            dropped = min(skipped, len(batch))
            batch, skipped = batch[dropped:], skipped - dropped
            if not batch:
                continue
        builder.add(batch)
        if builder.n_tokens >= shard_tokens:
            commit(builder, staging, state)
        if throttle():
            elapsed = time.monotonic() - start
            rate = seen_bytes / max(elapsed, 1e-9)
            eta = (total_bytes - seen_bytes) / rate if rate else 0
            say(
                f"prepare: {seen_bytes / 1e6:.1f}/{total_bytes / 1e6:.1f} MB "
                f"({min(100, 100 * seen_bytes / max(total_bytes, 1)):.0f}%) | "
                f"{count(state['records'] + builder.n_records)} docs | {rate / 1e6:.2f} MB/s | ETA {duration(eta)}"
            )
    if builder.n_records:
        commit(builder, staging, state)
    return {
        "shards": state["shards"],
        "files": state["files"],
        "documents": sum(s["documents"] for s in state["shards"]),
        "tokens": sum(s["tokens"] + s["target_tokens"] for s in state["shards"]),
    }


def commit(builder: ShardBuilder, staging: Path, state: dict) -> None:
    consumed = builder.n_records
    info = write_shard(staging, len(state["shards"]), builder.take())
    state["shards"].append(info)
    state["records"] += consumed
    state["files"] = builder.file_names
    save_state(staging, state)


def load_prepared(folder: str | os.PathLike, tokenizer, *, parallel: bool) -> Corpus:
    """Memory-map a prepared folder, checking that it was made with `tokenizer`."""
    folder = Path(folder)
    meta_path = folder / META
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{meta_path}: unreadable ({error})") from None
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise DataError(f"{meta_path}: not a triform prepared corpus of version <= {VERSION}")
    if meta.get("tokenizer_sha256") != fingerprint(tokenizer):
        raise DataError(
            f"{meta_path}: prepared with a different tokenizer than this run's; prepare it again with the run's "
            "tokenizer.json"
        )
    kind = "parallel" if parallel else "text"
    if meta["kind"] != kind:
        raise DataError(f"{meta_path}: holds {meta['kind']} data, but the objective needs {kind} data")
    shards = []
    for index in range(len(meta["shards"])):
        arrays = {key: np.load(folder / name, mmap_mode="r") for key, name in shard_files(index, parallel).items()}
        shard = Shard(Documents(arrays["tokens"], np.asarray(arrays["ends"])))
        if parallel:
            shard.targets = Documents(arrays["target_tokens"], np.asarray(arrays["target_ends"]))
            shard.origins = np.asarray(arrays["origins"])
        shards.append(shard)
    return Corpus(kind, shards, meta.get("files", []), str(folder))
