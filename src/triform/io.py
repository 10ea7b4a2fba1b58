"""Files and folders written whole or not at all.

Every file and folder triform writes whole goes through here (the files inside a staging folder are
written plainly: the folder is what appears at once; metrics.jsonl is appended to, a line at a time).
A file is written to a temporary sibling with a unique name (from `tempfile`, so two writers never
share one), flushed and fsync'd, then renamed over the target: a reader sees the old file or the new
one, never half of one, and a crash leaves the old file in place. The folder is fsync'd after the
rename, so the rename itself survives a power cut. A folder is written the same way: into a hidden
staging folder beside it, swapped in when complete.

A missing parent folder is created, by every writer here: an output path names where the result
should go, as `triform train --run_dir` and `prepare --output` always have, so `--output` of
generate, translate, fill-mask, predict and evaluate all make theirs too (a typo in it shows up as a
new folder, not as a lost result).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

Content = str | bytes | Callable[[Path], object]

# tempfile makes files 0600 and folders 0700; a written file should have the mode `open` would give it.
# The umask can only be read by setting it, so it is read once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, content: Content, *, encoding: str = "utf-8") -> Path:
    """Write `content` to `path` atomically; returns the path.

    `content` is text (encoded with `encoding`), bytes, or a writer: a function given the temporary
    path to write to (`lambda temporary: figure.savefig(temporary)`), for libraries that write files
    themselves. The temporary name ends in the target's suffix, for writers that go by it (savefig,
    np.save). On any failure, an interrupt included, the temporary is removed and `path` is untouched.
    """
    path = Path(path)
    if path.is_dir():  # else the rename's error would name the temporary file
        raise IsADirectoryError(errno.EISDIR, "a folder where a file is to be written", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    temporary = Path(name)
    try:
        if callable(content):
            os.close(descriptor)
            descriptor = -1
            content(temporary)
            descriptor = os.open(temporary, os.O_RDONLY)  # fsync needs a descriptor of the same file
        else:
            data = content.encode(encoding) if isinstance(content, str) else content
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
        os.close(descriptor)
        descriptor = -1
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        if descriptor >= 0:
            os.close(descriptor)
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
    return path


def make_room_for(path: str | os.PathLike, *, is_folder: bool = False) -> None:
    """Make `path`'s folder, as its writer would, and check that a file can be written there, so that a
    command whose output cannot be written fails before its work rather than after it; raises OSError
    naming what is in the way: a file where a folder is needed, or (unless the output `is_folder`) a
    folder where the file is to go."""
    if not is_folder and Path(path).is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder where a file is to be written", str(path))
    folder = Path(path).absolute().parent
    in_the_way = next((above for above in (folder, *folder.parents) if above.exists()), folder)
    if not in_the_way.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file where a folder is needed", str(in_the_way))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """One item a line, each ended by a newline; a newline inside an item becomes a space, so that a
    reader of lines gets back as many as were written."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            file.writelines(line.replace("\n", " ") + "\n" for line in lines)

    return atomic_write(path, write)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """One JSON object a line (UTF-8, not escaped). `rows` may be a generator: it is streamed, and if
    it fails the file is left as it was."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")

    return atomic_write(path, write)


@contextmanager
def atomic_dir(
    target: str | os.PathLike, *, resume: bool = False, discard: tuple[type[BaseException], ...] = ()
) -> Iterator[Path]:
    """Yield a hidden staging folder beside `target`; fill it, and on leaving the block it is fsync'd
    and swapped into place. An existing `target` is moved aside first and removed only after the swap.
    If the block fails, the staging folder is removed and an existing `target` is untouched.

    With `resume`, the staging folder has a fixed name, `.NAME.partial`, which the block finds as a
    previous, interrupted run left it, and which survives a failure so that a rerun can continue
    there; only a failure of a type in `discard` (the content is wrong, not unfinished) removes it.
    Whatever the block writes there that must survive a kill is written with `atomic_write`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        staging = target.with_name(f".{target.name}.partial")
        staging.mkdir(exist_ok=True)
    else:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        os.chmod(staging, 0o777 & ~_UMASK)
    try:
        yield staging
        sync_tree(staging)
        swap_in(staging, target)
    except BaseException as error:
        if not resume or isinstance(error, discard):
            shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_in(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`, moving an existing `target` aside first and removing it after.

    Between the two renames `target` is briefly absent; it is never incomplete. If another writer's
    folder lands on `target` in between, it is moved aside too and the rename tried again: the last
    writer wins, as with files.
    """
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    moved: list[Path] = []
    try:
        for attempt in range(100):
            if target.exists() or target.is_symlink():
                try:
                    os.rename(target, aside / str(attempt))
                    moved.append(aside / str(attempt))
                except FileNotFoundError:
                    pass  # another writer moved it aside after we looked: the rename below may go through
            try:
                os.rename(staging, target)
                break
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        else:
            raise OSError(errno.EEXIST, f"{target}: other writers keep replacing it")
    except BaseException:
        if moved and not target.exists():
            os.rename(moved[-1], target)  # put back what was there
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    sync_folder(target.parent)


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, itself included: files that libraries wrote
    (safetensors, tokenizers, numpy) are on disk before the folder is renamed into place."""
    for root, _, files in os.walk(folder):
        for name in files:
            descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        sync_folder(Path(root))


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename or a new name in it is on disk."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform that cannot open folders (Windows) has nothing to sync
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on a folder; the rename is all they offer
        pass
    finally:
        os.close(descriptor)
