"""Docs claims tables come from committed records: generated between markers, never typed."""

import json
from pathlib import Path

import pytest

from optforge.repro import RunStore
from optforge.repro.doc_tables import (
    BEGIN,
    END,
    NO_RECORD,
    SUMMARY_BEGIN,
    SUMMARY_END,
    DocTablesError,
    collect,
    main,
    replace_between,
    write_tables,
)


def _record(name="toy", scale="quick", run_id="abc123", value=0.5):
    return {
        "schema": 1,
        "run_id": run_id,
        "created": "2026-01-01T00:00:00+00:00",
        "name": name,
        "title": "A toy",
        "arxiv": "0000.00000",
        "spec": "none.md",
        "scale": scale,
        "seeds": [100, 101, 102],
        "config": {},
        "run_info": {
            "platform": "Linux-x86_64",
            "device": "cpu",
            "device_name": "x86_64",
            "threads": 1,
            "python": "3.11.7",
            "torch_version": "2.13.0+cpu",
            "numpy_version": "2.4.6",
            "packages": {"scikit-learn": "1.7.0", "peft": None},
            "optforge_version": "0.1.0",
            "git_revision": "0123456789abcdef0123",
            "wall_time_s": 12.0,
        },
        "metrics": {"ours": {"100": {"x": value}}},
        "claims": [
            {
                "name": "ours-wins",
                "statement": "Ours | wins",
                "quantity": "mean x, ours − baseline (<b>points</b>)",
                "op": ">=",
                "threshold": 0.1,
                "value": value,
                "interval": [0.05, 0.9],
                "interval_level": 0.95,
                "n_seeds": 3,
                "verdict": "inconclusive",
                "held": False,
            },
            {
                "name": "ours-fast",
                "statement": "fast",
                "op": "<",
                "threshold": 1.0,
                "value": 0.2,
                "interval": [0.1, 0.3],
                "verdict": "held",
                "held": True,
            },
        ],
        "all_held": False,
    }


PAGE = "# Toy\n\nIntro by hand.\n\n" + BEGIN + "\nold table\n" + END + "\n\nMore by hand.\n"


@pytest.fixture
def docs(tmp_path):
    records, pages = tmp_path / "records", tmp_path / "methods"
    records.mkdir()
    pages.mkdir()
    (records / "toy.json").write_text(json.dumps(_record()))
    (pages / "toy.md").write_text(PAGE)
    return records, pages


def test_writes_the_table_between_the_markers_only(docs):
    records, pages = docs
    assert write_tables(records, pages) == {(pages / "toy.md").as_posix(): "updated"}
    text = (pages / "toy.md").read_text()
    assert text.startswith("# Toy\n\nIntro by hand.\n\n" + BEGIN)
    assert text.endswith(END + "\n\nMore by hand.\n")
    assert "old table" not in text
    assert "| `ours-wins` | mean x, ours − baseline (&lt;b&gt;points&lt;/b&gt;) | 0.5 |" in text
    assert "[0.05, 0.9] | &gt;= 0.1 | *inconclusive* |" in text
    assert "| `ours-fast` |" in text and "**held**" in text
    assert "1/2 claims held, 0 failed, 1 inconclusive." in text
    # Machine and package versions beside the table, and the record it comes from.
    assert "Linux-x86\\_64" in text or "Linux-x86_64" in text
    assert "torch 2.13.0+cpu" in text and "scikit-learn 1.7.0" in text and "peft" not in text
    assert "(../records/toy.json)" in text and "`abc123`" in text and "git 0123456789ab" in text


def test_second_run_changes_nothing_and_check_sees_stale_pages(docs):
    records, pages = docs
    write_tables(records, pages)
    first = (pages / "toy.md").read_text()
    assert write_tables(records, pages) == {(pages / "toy.md").as_posix(): "up to date"}
    assert (pages / "toy.md").read_text() == first
    (records / "toy.json").write_text(json.dumps(_record(run_id="def456", value=0.7)))
    assert main(["write", "--records", str(records), "--pages", str(pages), "--check"]) == 1
    assert (pages / "toy.md").read_text() == first  # --check writes nothing
    assert main(["write", "--records", str(records), "--pages", str(pages)]) == 0
    assert "`def456`" in (pages / "toy.md").read_text()


def test_pages_without_markers_are_left_alone_and_broken_markers_are_errors(docs, capsys):
    records, pages = docs
    (pages / "toy.md").write_text("# Toy\n\nno markers\n")
    assert write_tables(records, pages) == {(pages / "toy.md").as_posix(): "no markers"}
    assert (pages / "toy.md").read_text() == "# Toy\n\nno markers\n"
    (pages / "toy.md").write_text(END + "\n" + BEGIN + "\n")
    with pytest.raises(DocTablesError, match=r"toy\.md"):
        write_tables(records, pages)
    assert main(["write", "--records", str(records), "--pages", str(pages)]) == 2
    assert "toy.md" in capsys.readouterr().err


def test_a_corrupt_record_is_an_error_naming_the_file(docs):
    records, pages = docs
    (records / "toy.json").write_text("{not json")
    with pytest.raises(DocTablesError, match=r"toy\.json"):
        write_tables(records, pages)


def test_summary_block(docs, tmp_path):
    records, pages = docs
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- claims-summary:begin -->\n<!-- claims-summary:end -->\ny\n")
    write_tables(records, pages, summary_files=[readme])
    text = readme.read_text()
    assert "| [`toy`](methods/toy.md) | A toy (0000.00000) | quick | 1/2 | 0 | 1 |" in text
    assert "`abc123` (2026-01-01, git 0123456789ab)" in text
    # The machine and package versions beside the table, naming the records they apply to.
    assert "Machine: Linux-x86_64, cpu (x86_64), 1 thread(s)." in text
    assert "torch 2.13.0+cpu" in text and "scikit-learn 1.7.0" in text and "Records: toy." in text
    assert text.startswith("x\n") and text.endswith("\ny\n")


def test_a_page_without_a_record_says_so_until_its_record_is_committed(docs, tmp_path):
    records, pages = docs
    (pages / "other.md").write_text(
        "# Other method\n\n" + BEGIN + "\nhand-typed 9/9\n" + END + "\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(SUMMARY_BEGIN + "\n| old | 9/9 |\n" + SUMMARY_END + "\n")
    status = write_tables(records, pages, summary_files=[readme])
    assert status[(pages / "other.md").as_posix()] == "updated"
    page = (pages / "other.md").read_text()
    assert NO_RECORD in page and "hand-typed" not in page
    assert f"`{(records / 'other.json').as_posix()}` does not exist" in page
    assert "optforge reproduce other --scale quick" in page
    summary = readme.read_text()
    assert (
        f"| [`other`](methods/other.md) | Other method | – | {NO_RECORD} | – | – | – |" in summary
    )
    assert "| [`toy`](methods/toy.md) |" in summary and "9/9" not in summary
    assert "1 of 2 method pages have a committed record (1 record(s) in all)." in summary
    # Up to date now; a record committed later makes --check fail until write is run.
    args = ["write", "--records", str(records), "--pages", str(pages), "--summary", str(readme)]
    assert main([*args, "--check"]) == 0
    (records / "other.json").write_text(json.dumps(_record(name="other", run_id="oth999")))
    assert main([*args, "--check"]) == 1
    assert NO_RECORD in (pages / "other.md").read_text()  # --check wrote nothing
    assert main(args) == 0
    page, summary = (pages / "other.md").read_text(), readme.read_text()
    assert NO_RECORD not in page and "`oth999`" in page and "1/2 claims held" in page
    assert NO_RECORD not in summary and "| [`other`](methods/other.md) | A toy (0000.00000) |" in (
        summary
    )
    assert "Records: other, toy." in summary and "2 of 2 method pages have" in summary


ROOT = Path(__file__).resolve().parents[2]


def test_every_method_page_has_claim_markers_and_the_docs_are_up_to_date(monkeypatch, capsys):
    """CI: the committed pages and README match the committed records (``write --check``)."""
    pages = sorted((ROOT / "docs" / "methods").glob("*.md"))
    assert len(pages) >= 18
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert text.count(BEGIN) == 1 and text.count(END) == 1, page.name
    summaries = ["README.md", "docs/index.md"]
    for name in summaries:
        text = (ROOT / name).read_text(encoding="utf-8")
        assert text.count(SUMMARY_BEGIN) == 1 and text.count(SUMMARY_END) == 1, name
    monkeypatch.chdir(ROOT)
    code = main(["write", "--check", "--summary", summaries[0], "--summary", summaries[1]])
    out = capsys.readouterr().out
    fix = "python -m optforge.repro.doc_tables write --summary README.md --summary docs/index.md"
    assert code == 0, f"run: {fix}\n{out}"
    assert "no markers" not in out


def test_collect_copies_the_latest_record_of_the_scale(tmp_path):
    store = RunStore(tmp_path / "store")
    for record in (_record(run_id="r1"), _record(run_id="r2"), _record(run_id="r3", scale="smoke")):
        store.append(record)
    [path] = collect(tmp_path / "store", tmp_path / "records", scale="quick")
    assert path.name == "toy.json" and json.loads(path.read_text())["run_id"] == "r2"


def test_replace_between_without_markers_is_none():
    assert replace_between("text", BEGIN, END, "x") is None
