"""The search grammar (pure) and its SQLAlchemy adapter on SQLite and PostgreSQL."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any

import pytest
from flask import request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Enum, String, Text, inspect, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from srcore.db import TYPE_ANNOTATION_MAP, Database, make_metadata
from srcore.search import (
    MAX_QUERY_LENGTH,
    MAX_TERMS,
    SearchError,
    SearchSchema,
    Term,
    choice,
    format_query,
    parse_query,
)

# -- the grammar -------------------------------------------------------------------------------


def test_parse_the_documented_example() -> None:
    query = 'crash "exact phrase" status:open submitter:"some one" !label:wontfix !flaky'
    assert parse_query(query) == [
        Term("crash"),
        Term("exact phrase"),
        Term("open", "status"),
        Term("some one", "submitter"),
        Term("wontfix", "label", negated=True),
        Term("flaky", negated=True),
    ]


def test_parse_details() -> None:
    assert parse_query("") == []
    assert parse_query("  \t\n ") == []
    assert parse_query("Status:Open") == [Term("Open", "status")]
    assert parse_query("url:http://x.invalid/a:b") == [Term("http://x.invalid/a:b", "url")]
    assert parse_query("3:00 :x a!b") == [Term("3:00"), Term(":x"), Term("a!b")]
    assert parse_query(r'"say \"hi\" \\ bye"') == [Term('say "hi" \\ bye')]
    assert parse_query('!"not this"') == [Term("not this", negated=True)]
    assert parse_query("!!x") == [Term("!x", negated=True)]
    assert parse_query('k:"a b" x') == [Term("a b", "k"), Term("x")]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ('"never closed', '"never closed'),
        ('status:"open', 'status:"open'),
        ("status:", "status:"),
        ('status:""', 'status:""'),
        ('status:"  "', 'status:"  "'),
        ('""', '""'),
        ("!", "!"),
        ("ab !  cd", "!"),
        ('foo"bar"', 'foo"bar"'),
        ('"a"b', '"a"b'),
        ('k:"a"b', 'k:"a"b'),
        ('k:a"b"', 'k:a"b"'),
    ],
)
def test_bad_syntax_names_the_term(query: str, names: str) -> None:
    with pytest.raises(SearchError) as caught:
        parse_query(query)
    assert caught.value.term == names
    assert names[:30] in caught.value.reason


def test_limits() -> None:
    assert len(parse_query(" ".join(["w"] * MAX_TERMS))) == MAX_TERMS
    with pytest.raises(SearchError, match="too many terms"):
        parse_query(" ".join(["w"] * (MAX_TERMS + 1)))
    with pytest.raises(SearchError, match="too long"):
        parse_query("x" * (MAX_QUERY_LENGTH + 1))
    with pytest.raises(SearchError, match="cannot be searched"):
        parse_query("a\x00b")
    with pytest.raises(SearchError, match="cannot be searched"):
        parse_query("a\ud800b")


def test_hostile_input_is_refused_or_parsed() -> None:
    # Inputs that make backtracking matchers explode; a one-pass scanner shrugs them off.
    with pytest.raises(SearchError, match="never closed"):
        parse_query('"' + "\\" * 998)
    assert parse_query("a:" * 333) == [Term(":".join(["a"] * 332) + ":", "a")]
    with pytest.raises(SearchError, match="quote in the middle"):
        parse_query('!"' * 333)
    assert parse_query("k:" + '"' + '\\"' * 400 + '"') == [Term('"' * 400, "k")]


@given(st.text(max_size=200))
def test_parser_raises_only_search_error(query: str) -> None:
    try:
        terms = parse_query(query)
    except SearchError as exc:
        reason = exc.reason
        assert reason
        return
    assert len(terms) <= MAX_TERMS
    # whatever parses, writing it back parses to the same terms
    assert parse_query(format_query(terms)) == terms


@given(st.text(alphabet='ab: "!\\\t', max_size=60))
def test_parser_on_grammar_characters(query: str) -> None:
    try:
        terms = parse_query(query)
    except SearchError:
        return
    assert parse_query(format_query(terms)) == terms


_keys = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
_values = st.text(min_size=1, max_size=30).filter(lambda v: v.strip() and "\x00" not in v)
_terms = st.builds(
    Term,
    value=_values.filter(lambda v: not any(0xD800 <= ord(c) <= 0xDFFF for c in v)),
    key=st.none() | _keys,
    negated=st.booleans(),
)


@given(st.lists(_terms, max_size=MAX_TERMS))
def test_generated_queries_round_trip(terms: list[Term]) -> None:
    query = format_query(terms)
    if len(query) <= MAX_QUERY_LENGTH:
        assert parse_query(query) == terms


# -- the SQLAlchemy adapter --------------------------------------------------------------------


class Base(DeclarativeBase):
    metadata = make_metadata()
    type_annotation_map = TYPE_ANNOTATION_MAP


class Colour(enum.StrEnum):
    red = "red"
    blue = "blue"


class Item(Base):
    __tablename__ = "search_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text)
    colour: Mapped[Colour] = mapped_column(
        Enum(Colour, native_enum=False, create_constraint=False, length=8)
    )
    owner: Mapped[str] = mapped_column(String(50))


TITLES = [
    "100% done",
    "1000 done",
    "snake_case name",
    "snakeXcase name",
    "back\\slash",
    "slash/escape",
    "it's quoted",
    'say "hi"',
    "x'); DROP TABLE search_item; --",
    "' OR '1'='1",
    "Crash on START",
    "plain",
]

SCHEMA = SearchSchema(
    text=[Item.title, Item.body],
    keys={
        "colour": choice(Item.colour, Colour),
        "owner": lambda name: Item.owner == name,
    },
)


@pytest.fixture
def items(database: Database) -> Iterator[Session]:
    Base.metadata.create_all(database.engine)
    with database.session() as s:
        for i, title in enumerate(TITLES, start=1):
            s.add(
                Item(
                    id=i,
                    title=title,
                    body=None if i % 3 == 0 else f"body of {i}",
                    colour=Colour.red if i % 2 else Colour.blue,
                    owner="alice" if i <= 6 else "bob",
                )
            )
        s.commit()
        yield s


def found(s: Session, query: str) -> list[str]:
    stmt = select(Item.title).where(SCHEMA.where(query)).order_by(Item.id)
    return list(s.scalars(stmt))


def model(query: str) -> list[str]:
    """What the search should find, computed in Python from the same rows."""
    rows = []
    for i, title in enumerate(TITLES, start=1):
        body = None if i % 3 == 0 else f"body of {i}"
        row = {"title": title, "body": body, "colour": "red" if i % 2 else "blue"}
        row["owner"] = "alice" if i <= 6 else "bob"
        rows.append(row)
    result = []
    for row in rows:
        ok = True
        for term in parse_query(query):
            if term.key is None:
                hit = any(term.value.lower() in (row[f] or "").lower() for f in ("title", "body"))
            elif term.key == "colour":
                hit = row["colour"] == term.value.strip().lower()
            else:
                hit = row["owner"] == term.value
            ok = ok and (hit != term.negated)
        if ok:
            result.append(str(row["title"]))
    return result


def test_like_wildcards_are_literal(items: Session) -> None:
    assert found(items, '"100%"') == ["100% done"]
    assert found(items, "snake_case") == ["snake_case name"]
    assert found(items, "back\\slash") == ["back\\slash"]
    assert found(items, "slash/") == ["slash/escape"]
    assert found(items, '"%"') == ["100% done"]
    assert found(items, '"_"') == ["snake_case name", TITLES[8]]


def test_injection_attempts_are_plain_text(items: Session, database: Database) -> None:
    assert found(items, '"x\'); DROP TABLE search_item; --"') == [TITLES[8]]
    assert found(items, "\"' OR '1'='1\"") == [TITLES[9]]
    assert found(items, "owner:\"alice' OR '1'='1\"") == []
    assert found(items, "it's") == ["it's quoted"]
    assert found(items, r'"say \"hi\""') == ['say "hi"']
    assert inspect(database.engine).has_table("search_item")
    assert len(found(items, "")) == len(TITLES)


def test_keys_words_and_negation(items: Session) -> None:
    assert found(items, "crash start") == ["Crash on START"]
    assert found(items, "Colour:BLUE owner:alice") == [
        "1000 done",
        "snakeXcase name",
        "slash/escape",
    ]
    assert found(items, "!colour:red !owner:bob") == found(items, "colour:blue owner:alice")
    # a NULL body is "does not contain", so a negated word keeps those rows
    assert found(items, "!body") == [t for i, t in enumerate(TITLES, 1) if i % 3 == 0]
    assert found(items, '!"body of" !colour:blue') == ["snake_case name", TITLES[8]]


@pytest.mark.parametrize(
    ("query", "term", "says"),
    [
        ("colour:green", "colour:green", "use one of red, blue"),
        ("size:big", "size:big", "Unknown key 'size'"),
        ("!size:big", "!size:big", "known keys: colour, owner"),
        ("http://x.invalid", "http://x.invalid", "Unknown key 'http'"),
    ],
)
def test_schema_errors_name_the_term(items: Session, query: str, term: str, says: str) -> None:
    with pytest.raises(SearchError) as caught:
        found(items, query)
    assert caught.value.term == term
    assert says in caught.value.reason


def test_schema_without_text_fields() -> None:
    schema = SearchSchema(keys={"colour": choice(Item.colour, Colour)})
    with pytest.raises(SearchError, match="use a key: colour"):
        schema.where("word")


def test_schema_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        SearchSchema(keys={"Bad": choice(Item.colour, Colour)})


_word = st.text(alphabet="abcdeSTX_%/\\'\" -;:!0", min_size=1, max_size=8)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.builds(Term, value=_word.filter(str.strip), negated=st.booleans())
        | st.builds(
            Term,
            value=st.sampled_from(["red", "BLUE", "alice", "bob", "' OR 1=1 --"]),
            key=st.sampled_from(["colour", "owner"]),
            negated=st.booleans(),
        ),
        max_size=4,
    )
)
def test_search_agrees_with_python(items: Session, terms: list[Term]) -> None:
    query = format_query(terms)
    if any(t.key == "colour" and t.value.lower() not in ("red", "blue") for t in terms):
        with pytest.raises(SearchError, match="use one of red, blue"):
            found(items, query)
        return
    assert found(items, query) == model(query)


# -- the framework's answer to a SearchError ---------------------------------------------------


@pytest.fixture
def probe_app(app: Any) -> Any:
    def probe() -> str:
        SCHEMA.where(request.args.get("search", ""))
        return "ok"

    app.add_url_rule("/api/search-probe", "api_search_probe", probe)
    app.add_url_rule("/search-probe", "search_probe", probe)
    return app


def test_an_uncaught_search_error_is_a_400(probe_app: Any) -> None:
    client = probe_app.test_client()
    answer = client.get("/api/search-probe", query_string={"search": "size:big"})
    assert answer.status_code == 400
    assert answer.get_json() == {
        "errors": [
            {
                "field": "search",
                "reason": "Unknown key 'size' in size:big; known keys: colour, owner.",
            }
        ]
    }
    page = client.get("/search-probe", query_string={"search": '"open'})
    assert page.status_code == 400
    assert "text/html" in page.content_type
    assert "is never closed" in page.get_data(as_text=True)
    assert client.get("/search-probe", query_string={"search": "colour:red"}).status_code == 200
