"""`make book` reuses a build only when nothing a page depends on has changed (tools/book_inputs.py)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def book_inputs(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("book_inputs", ROOT / "tools" / "book_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "BUILD", tmp_path / "_build")
    monkeypatch.setattr(module, "STAMP", tmp_path / "_build" / ".book-inputs")
    return module


def test_a_build_without_a_record_starts_empty(book_inputs):
    (book_inputs.BUILD / "html").mkdir(parents=True)
    assert book_inputs.main(["check"]) == 0
    assert not book_inputs.BUILD.exists()


def test_an_unchanged_build_is_kept(book_inputs):
    (book_inputs.BUILD / "html").mkdir(parents=True)
    book_inputs.main(["record"])
    book_inputs.main(["check"])
    assert (book_inputs.BUILD / "html").is_dir()


def test_a_changed_input_empties_the_build(book_inputs, monkeypatch):
    (book_inputs.BUILD / "html").mkdir(parents=True)
    book_inputs.main(["record"])
    monkeypatch.setattr(book_inputs, "fingerprint", lambda: "something else")
    book_inputs.main(["check"])
    assert not book_inputs.BUILD.exists()


def test_the_fingerprint_covers_normlib_and_the_installed_packages(book_inputs, monkeypatch):
    before = book_inputs.fingerprint()
    assert before == book_inputs.fingerprint()
    monkeypatch.setattr(book_inputs.importlib.metadata, "distributions", lambda: [])
    assert book_inputs.fingerprint() != before


def test_bad_usage_says_how(book_inputs, capsys):
    assert book_inputs.main(["clean"]) == 2
    assert "check|record" in capsys.readouterr().err
