"""srcore.search as an attacker meets it: hostile words, long self-similar text, odd values.

The adapter's promises checked here, on SQLite and PostgreSQL: a word is looked for as a
plain substring (no pattern language reaches the database, so nothing in a term is a
wildcard and nothing backtracks), the words of one query have a bounded total length, and
every error names its term in a bounded message.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import String, Text, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from werkzeug.datastructures import MultiDict

from srcore.db import TYPE_ANNOTATION_MAP, Database, make_metadata
from srcore.search import (
    MAX_QUERY_LENGTH,
    MAX_TEXT_LENGTH,
    SearchError,
    SearchSchema,
    parse_query,
    read_search,
)
from srcore.validation import Validation


class Base(DeclarativeBase):
    metadata = make_metadata()
    type_annotation_map = TYPE_ANNOTATION_MAP


class Note(Base):
    __tablename__ = "search_outsider_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(50))


SCHEMA = SearchSchema(
    text=[Note.title, Note.body],
    keys={"owner": lambda name: Note.owner == name},
)

#: A long, self-similar body: the input that makes a pattern match backtrack.
LONG = "a" * 20_000

ROWS = [
    ("percent", "100% sure"),
    ("under", "snake_case"),
    ("slash", "a/b and a//b"),
    ("backslash", "C:\\temp\\x"),
    ("quote", 'it\'s "quoted"'),
    ("brackets", "[abc] {x} (y) ^z$ .* a|b"),
    ("long", LONG),
    ("empty", None),
    ("emoji", "caf\u00e9 \U0001f600 \u202eevil"),
]


@pytest.fixture
def notes(database: Database) -> Iterator[Session]:
    Base.metadata.create_all(database.engine)
    with database.session() as s:
        for i, (title, body) in enumerate(ROWS, start=1):
            s.add(Note(id=i, title=title, body=body, owner="alice" if i % 2 else "bob"))
        s.commit()
        yield s


def found(s: Session, query: str) -> list[str]:
    stmt = select(Note.title).where(SCHEMA.where(query)).order_by(Note.id)
    return list(s.scalars(stmt))


def test_words_reach_the_database_as_a_substring_search_not_a_pattern() -> None:
    condition = SCHEMA.where('crash "100%_x"')
    for dialect, function in ((sqlite.dialect(), "instr("), (postgresql.dialect(), "strpos(")):
        sql = str(condition.compile(dialect=dialect)).lower()
        assert "like" not in sql
        assert "escape" not in sql
        assert sql.count(function) == 4  # two words, two text fields each


@pytest.mark.parametrize(
    ("query", "titles"),
    [
        ('"%"', ["percent"]),
        ('"_"', ["under"]),
        ("a/b", ["slash"]),
        ("a//b", ["slash"]),
        ("//", ["slash"]),
        ("\\temp", ["backslash"]),
        ('"\\\\"', ["backslash"]),
        ("it's", ["quote"]),
        ('"\\"quoted\\""', ["quote"]),
        ("[abc]", ["brackets"]),
        ('"^z$"', ["brackets"]),
        (".*", ["brackets"]),
        ("a|b", ["brackets"]),
        ("{x}", ["brackets"]),
        ("\U0001f600", ["emoji"]),
        ("\u202eevil", ["emoji"]),
        ("CAF\u00e9", ["emoji"]),
        ("%%", []),
        ("__", []),
    ],
)
def test_no_character_is_special(notes: Session, query: str, titles: list[str]) -> None:
    assert found(notes, query) == titles


def test_long_self_similar_terms_are_exact(notes: Session) -> None:
    near_miss = "a" * (MAX_TEXT_LENGTH - 1) + "b"
    assert found(notes, near_miss) == []
    assert found(notes, "!" + near_miss) == [title for title, _ in ROWS]
    assert found(notes, "a" * MAX_TEXT_LENGTH) == ["long"]
    assert found(notes, "b" + "a" * (MAX_TEXT_LENGTH - 1)) == []


def test_words_and_phrases_have_a_length_budget(notes: Session) -> None:
    half = "a" * (MAX_TEXT_LENGTH // 2)
    assert found(notes, f"{half} {half}") == ["long"]
    for query in (
        "a" * (MAX_TEXT_LENGTH + 1),
        f'{half} "{half}" x',
        f"{half} !{half}b",
    ):
        assert len(query) <= MAX_QUERY_LENGTH
        parse_query(query)  # the grammar reads it; the list refuses to look for it
        with pytest.raises(SearchError, match=f"use at most {MAX_TEXT_LENGTH},"):
            found(notes, query)
    # a key's value is compared, not looked for: it does not count
    assert found(notes, "owner:" + "x" * (MAX_TEXT_LENGTH * 2)) == []


@pytest.mark.parametrize(
    "query",
    [
        "colour" * 150 + ":x",
        "owner:" + "x" * 900 + ' "unclosed',
        "x:" * 450,
        "size:" + "y" * 900,
    ],
)
def test_messages_quote_a_long_term_cut_short(query: str) -> None:
    schema = SearchSchema(
        text=[Note.title],
        keys={"size": lambda value: (_ for _ in ()).throw(SearchError("no such size."))},
    )
    with pytest.raises(SearchError) as caught:
        schema.where(query)
    assert len(caught.value.reason) < 200, caught.value.reason
    assert caught.value.term is None or len(caught.value.term) <= len(query)


def test_a_list_without_text_fields_quotes_a_long_word_cut_short() -> None:
    schema = SearchSchema(keys={"owner": lambda name: Note.owner == name})
    with pytest.raises(SearchError) as caught:
        schema.where("w" * 190)
    assert len(caught.value.reason) < 150
    assert caught.value.term == "w" * 190


@pytest.mark.parametrize(
    "data",
    [
        MultiDict([("search", "percent"), ("search", "under")]),
        MultiDict([("search", "percent " + "p" * MAX_QUERY_LENGTH)]),
    ],
)
def test_a_search_that_could_not_be_read_matches_nothing(notes: Session, data: MultiDict) -> None:
    valid = Validation(data=data, source="form")
    _, condition = read_search(valid, SCHEMA)
    assert valid.error_for("search")
    assert list(notes.scalars(select(Note.title).where(condition))) == []


@pytest.mark.parametrize(
    "query",
    [
        '\u202e"never closed',
        'ab\u2067c"d',
        "size:\u200fx",
        "colour:\u202eder",
        "owner:\u2066x\u2069 size:\u061cbig",
    ],
)
def test_messages_write_characters_that_reorder_text_as_codes(query: str) -> None:
    schema = SearchSchema(text=[Note.title], keys={"owner": lambda name: Note.owner == name})
    with pytest.raises(SearchError) as caught:
        schema.where(query)
    reason = caught.value.reason
    assert not any(
        c in reason
        for c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    )
    assert "\\u" in reason
    assert caught.value.term is not None and caught.value.term in query  # the term itself, as typed
