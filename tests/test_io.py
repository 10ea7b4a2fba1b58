"""triform.io: files and folders are written whole or not at all, also with two writers at once."""

import json
import os
import threading

import pytest

from triform.io import atomic_dir, atomic_write, make_room_for, write_jsonl, write_lines


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_text_bytes_and_a_writer_callback(tmp_path):
    assert atomic_write(tmp_path / "a.txt", "é\n").read_text(encoding="utf-8") == "é\n"
    assert atomic_write(tmp_path / "b.bin", b"\x00\xff").read_bytes() == b"\x00\xff"
    atomic_write(tmp_path / "c.json", lambda temporary: temporary.write_text('{"x": 1}'))
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1}
    assert names(tmp_path) == ["a.txt", "b.bin", "c.json"]


def test_a_written_file_has_the_mode_open_gives(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    (tmp_path / "plain").write_text("x")
    atomic_write(tmp_path / "atomic", "x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_a_missing_folder_is_created(tmp_path):
    atomic_write(tmp_path / "new" / "deeper" / "a.txt", "x")
    write_lines(tmp_path / "lines" / "out.txt", ["a"])
    write_jsonl(tmp_path / "rows" / "out.jsonl", [{"a": 1}])
    assert (tmp_path / "new" / "deeper" / "a.txt").read_text() == "x"
    assert (tmp_path / "lines" / "out.txt").is_file() and (tmp_path / "rows" / "out.jsonl").is_file()


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "out.json"
    target.write_text("old")

    def half_then_fail(temporary):
        temporary.write_text('{"half": ')
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and names(tmp_path) == ["out.json"]


def test_temporary_names_are_unique_hidden_siblings_with_the_suffix(tmp_path):
    seen = []
    for _ in range(3):
        atomic_write(tmp_path / "loss.png", lambda temporary: (seen.append(temporary), temporary.write_bytes(b"x")))
    assert len(set(seen)) == 3
    for temporary in seen:
        assert temporary.parent == tmp_path and temporary.name.startswith(".loss.png.")
        assert temporary.suffix == ".png"  # savefig and np.save go by it
    assert names(tmp_path) == ["loss.png"]


def test_lines_and_jsonl(tmp_path):
    write_lines(tmp_path / "a.txt", ["one", "two\nlines"])
    assert (tmp_path / "a.txt").read_text() == "one\ntwo lines\n"
    target = tmp_path / "rows.jsonl"
    target.write_text("old\n")

    def rows():
        yield {"label": "é"}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert target.read_text() == "old\n" and names(tmp_path) == ["a.txt", "rows.jsonl"]
    write_jsonl(target, [{"label": "é"}, {"n": 2}])
    assert target.read_text(encoding="utf-8") == '{"label": "é"}\n{"n": 2}\n'


def run_together(writers, reader, seconds_of_work):
    """Start the writer threads and a reader; the reader runs until every writer is done."""
    done = threading.Event()
    failures = []

    def guarded(function, *args):
        try:
            function(*args)
        except BaseException as error:  # reported by the test, in the main thread
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(w, seconds_of_work)) for w in writers]
    read = threading.Thread(target=guarded, args=(reader, done))
    read.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    read.join()
    if failures:
        raise failures[0]


def test_two_writers_never_show_a_reader_half_a_file(tmp_path):
    target = tmp_path / "shared.json"
    atomic_write(target, json.dumps({"writer": -1, "data": []}))
    reads = []

    def writer(index):
        def write(rounds):
            for round_ in range(rounds):
                atomic_write(target, json.dumps({"writer": index, "round": round_, "data": list(range(20000))}))

        return write

    def reader(done):
        while not done.is_set() or not reads:
            document = json.loads(target.read_text())  # a half-written file would not parse
            assert document["writer"] == -1 or len(document["data"]) == 20000
            reads.append(document["writer"])

    run_together([writer(0), writer(1)], reader, 30)
    assert len(reads) > 1 and names(tmp_path) == ["shared.json"]
    assert json.loads(target.read_text())["round"] == 29


def fill(folder, token, files=("a.txt", "b.txt")):
    for name in files:
        (folder / name).write_text(token * 1000)


def test_a_folder_appears_whole_and_replaces_the_old_one_after_the_swap(tmp_path):
    with atomic_dir(tmp_path / "model") as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".model.")
        assert not (tmp_path / "model").exists()
        fill(staging, "1")
    assert names(tmp_path) == ["model"] and names(tmp_path / "model") == ["a.txt", "b.txt"]
    with atomic_dir(tmp_path / "model") as staging:
        fill(staging, "2", ["c.txt"])
        assert (tmp_path / "model" / "a.txt").read_text() == "1" * 1000  # the old one, until the block ends
    assert names(tmp_path) == ["model"] and names(tmp_path / "model") == ["c.txt"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_folder_leaves_the_old_one_and_nothing_else(tmp_path, error):
    with atomic_dir(tmp_path / "model") as staging:
        fill(staging, "1")
    with pytest.raises(type(error)), atomic_dir(tmp_path / "model") as staging:
        fill(staging, "2")
        raise error
    assert names(tmp_path) == ["model"] and (tmp_path / "model" / "a.txt").read_text() == "1" * 1000
    with pytest.raises(type(error)), atomic_dir(tmp_path / "new") as staging:
        raise error
    assert names(tmp_path) == ["model"]


def test_a_resumable_folder_survives_an_interrupt_and_is_continued(tmp_path):
    class BadInput(Exception):
        pass

    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "data", resume=True, discard=(BadInput,)) as staging:
        (staging / "shard-0").write_text("done")
        raise KeyboardInterrupt
    assert names(tmp_path) == [".data.partial"]
    with atomic_dir(tmp_path / "data", resume=True, discard=(BadInput,)) as staging:
        assert names(staging) == ["shard-0"]  # what the interrupted run finished
        (staging / "shard-1").write_text("done")
    assert names(tmp_path) == ["data"] and names(tmp_path / "data") == ["shard-0", "shard-1"]
    with pytest.raises(BadInput), atomic_dir(tmp_path / "data", resume=True, discard=(BadInput,)) as staging:
        (staging / "shard-0").write_text("wrong")
        raise BadInput
    assert names(tmp_path) == ["data"] and (tmp_path / "data" / "shard-0").read_text() == "done"


def test_two_folder_writers_never_show_a_reader_a_mixed_or_partial_folder(tmp_path):
    target = tmp_path / "model"
    seen = []

    def writer(token):
        def write(rounds):
            for _ in range(rounds):
                with atomic_dir(target) as staging:
                    fill(staging, token)

        return write

    def reader(done):
        while not done.is_set() or not seen:
            try:  # read both files of one folder, through a descriptor that follows it if it is moved aside
                folder = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # between the two renames of a swap
            try:
                texts = []
                for name in ("a.txt", "b.txt"):
                    with open(os.open(name, os.O_RDONLY, dir_fd=folder)) as file:
                        texts.append(file.read())
            except FileNotFoundError:
                continue  # the folder was replaced and removed while being read
            finally:
                os.close(folder)
            assert texts[0] == texts[1] and len(texts[0]) == 1000, "a folder mixed from two writes"
            seen.append(texts[0][0])

    run_together([writer("x"), writer("y")], reader, 20)
    assert seen and names(tmp_path) == ["model"] and names(target) == ["a.txt", "b.txt"]


def test_a_swap_that_fails_puts_the_old_folder_back(tmp_path, monkeypatch):
    import triform.io

    with atomic_dir(tmp_path / "model") as staging:
        fill(staging, "1")
    rename = os.rename

    def refuse_the_new_folder(source, destination):
        if os.path.basename(source).startswith(".model.") and "old-" not in str(source):
            raise PermissionError(13, "refused", str(source))
        rename(source, destination)

    monkeypatch.setattr(triform.io.os, "rename", refuse_the_new_folder)
    with pytest.raises(PermissionError), atomic_dir(tmp_path / "model") as staging:
        fill(staging, "2")
    assert names(tmp_path) == ["model"] and (tmp_path / "model" / "a.txt").read_text() == "1" * 1000


def test_room_is_made_for_an_output_or_what_is_in_the_way_is_named(tmp_path):
    make_room_for(tmp_path / "new" / "deeper" / "out.txt")
    assert (tmp_path / "new" / "deeper").is_dir() and list((tmp_path / "new" / "deeper").iterdir()) == []
    (tmp_path / "a-file").write_text("kept")
    with pytest.raises(NotADirectoryError, match="a file where a folder is needed") as raised:
        make_room_for(tmp_path / "a-file" / "below" / "out.txt")
    assert raised.value.filename == str(tmp_path / "a-file") and not (tmp_path / "a-file" / "below").exists()
    with pytest.raises(IsADirectoryError, match="a folder where a file is to be written"):
        make_room_for(tmp_path / "new")
    make_room_for(tmp_path / "new", is_folder=True)


def test_a_file_is_not_written_over_a_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        atomic_write(tmp_path / "folder", "text")
    assert raised.value.filename == str(tmp_path / "folder") and list(tmp_path.iterdir()) == [tmp_path / "folder"]
