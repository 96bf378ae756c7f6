"""Text classes of srcore.validation (``text="line"``, ``text="name"``) fed the whole of
Unicode: a value is taken or refused with a reason naming what is wrong, a character as
U+XXXX; what is taken reorders nothing around it; and todo's API answers the same way."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srcore.validation import MAX_COMBINING_MARKS, Invalid, coerce_string

#: Every code point, surrogates and unassigned ones included.
ANY_TEXT = st.text(st.characters(codec=None, min_codepoint=0), max_size=40)
#: What would reorder the text shown around a value it is in.
REORDERING = re.compile("[\u202a-\u202e\u2066-\u2069]")
NAMED = re.compile(r"U\+([0-9A-F]{4,6})")


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "todo"


@settings(max_examples=400, deadline=None)
@given(value=ANY_TEXT, kind=st.sampled_from(["line", "name"]))
def test_a_line_or_name_is_taken_or_refused_by_name(value: str, kind: Any) -> None:
    try:
        taken = coerce_string(value, text=kind)
    except Invalid as refused:
        reason = refused.reason
        assert reason.isprintable()
        for named in NAMED.findall(reason):
            assert chr(int(named, 16)) in value
        return
    assert not REORDERING.search(taken)
    assert "\n" not in taken and "\r" not in taken
    if kind == "name":
        assert not any(unicodedata.category(char) == "Cf" for char in taken if char.isascii())


@pytest.mark.parametrize(
    "stack",
    [
        "ก" + "\u0e47" * 30,  # Thai maitaikhu, combining class 0, drawn stacked
        "e" + "\u0301" * MAX_COMBINING_MARKS + "\u034f" + "\u0301" * MAX_COMBINING_MARKS,
        "क" + "\u0941" * 20,  # Devanagari vowel sign u, combining class 0
    ],
)
@pytest.mark.parametrize("kind", ["line", "name"])
def test_marks_of_combining_class_zero_stack_too(stack: str, kind: Any) -> None:
    with pytest.raises(Invalid, match="combining marks"):
        coerce_string(stack, text=kind)


@pytest.mark.parametrize("value", ["ก็", "กี่", "ที่นี่", "हिन्दी", "བོད་ཡིག", "שָׁלוֹם"])
def test_the_marks_a_script_needs_are_taken(value: str) -> None:
    assert coerce_string(value, text="name") == value


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(title=ANY_TEXT.filter(lambda text: text.strip()))
def test_todo_answers_any_title_with_201_or_a_400_naming_the_title(
    app: Any, client: Any, make_token: Any, user: Any, title: str
) -> None:
    from todo.models import Tracker, Visibility

    with app.extensions["srcore"].db.transaction() as session:
        if session.query(Tracker).filter_by(name="site").first() is None:
            session.add(Tracker(owner_id=user.id, name="site", visibility=Visibility.public))
    headers = {"Authorization": f"Bearer {make_token('todo/tickets:RW', user=user)}"}
    answer = client.post(
        "/api/trackers/site/tickets", json={"title": title, "description": "x"}, headers=headers
    )
    assert answer.status_code in (201, 400), answer.get_data(as_text=True)
    if answer.status_code == 400:
        errors = answer.get_json()["errors"]
        # A lone surrogate is no text: the body as a whole is refused, saying so.
        assert errors[0].get("field") == "title" or "surrogate" in errors[0]["reason"]
        return
    number = answer.get_json()["number"]
    page = client.get(f"/~alice/site/{number}").get_data(as_text=True)
    # The title sits isolated: nothing it holds can reorder the heading's other text.
    assert re.search(r"<h1><bdi>[^<]*</bdi> <span", page)
