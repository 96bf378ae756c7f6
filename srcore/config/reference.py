"""The config reference: every declared key, rendered as Markdown for operators.

:func:`render_reference` turns :data:`~srcore.config.GLOBAL_KEYS`,
:data:`~srcore.config.SERVICE_KEYS` and the given service manifests into the text of
``docs/config-reference.md``; :func:`reference_problems` says what is wrong with a copy of
it (a declared key without an entry, an entry no declaration has, or simply stale text), so
a test keeps the file in sync. Both are plain functions over plain values: the manifests
are passed in, never discovered here, so a test can pin them.

``srcore config reference --output docs/config-reference.md`` regenerates the file from the
installed services.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from srcore.config.declarations import GLOBAL_KEYS, SERVICE_KEYS
from srcore.config.keys import Key, env_name, format_value

__all__ = [
    "ANY_SERVICE",
    "REGENERATE",
    "declared_entries",
    "documented_entries",
    "reference_problems",
    "render_reference",
]

#: The section label standing for "every service" in the reference.
ANY_SERVICE = "<service>"
#: The command that rewrites the reference; named in its header and in every problem.
REGENERATE = "srcore config reference --output docs/config-reference.md"

_SECTION_HEADING = re.compile(r"^## `\[([^\]`]+)\]`", re.MULTILINE)
_KEY_HEADING = re.compile(r"^### `([^`]+)`", re.MULTILINE)

_TYPE_NAMES = {
    "str": "text",
    "int": "whole number",
    "bool": "yes/no (`true`, `false`)",
    "duration": "duration (`30s`, `5m`, `1h`, `2d`, `1h30m`)",
    "url": "URL",
    "path": "file path",
    "list": "list (comma- or line-separated)",
}

_INTRO = f"""\
# Config reference

<!-- Generated from the key declarations: do not edit by hand. -->

> **Generated** from srcore's key declarations (`srcore/config/declarations.py`) and the
> services' `service.yaml` manifests. Do not edit it by hand: change the declaration, then
> run `{REGENERATE}`. `tests/test_docs.py` fails when this file is out of date.

Every service of a network reads one INI file. This page lists every key srcore and the
services in this repository declare, section by section. `srcore config check` validates a
file against the same declarations, builds each installed service of the file as `srcore
serve` does before serving (so what would stop one from starting is said too), and reports
every problem at once; `srcore config show [SERVICE]` prints the effective values and where
each came from (secrets masked), and a file with errors as far as it can be read, followed
by its problems.

## Where the file is, and how values are given

**Lookup order.** The file named by `srcore --config FILE`, else `$SRCORE_CONFIG`, else
`./config.ini`, else `/etc/srcore/config.ini`. An explicit path or `$SRCORE_CONFIG` must
exist; nothing else is tried then.

**Sections.** `[global]` is shared by every service and may be left out (every key has a
default). Each service has a section named by its id (`[meta]`, `[todo]`): the services in
the file *are* the network, and the navigation bar shows exactly those. A service may read
sub-sections named `[SERVICE::group]`. Unknown keys are warned about, not fatal (one that
another section declares, like meta's `login-lockout` under `[todo]`, is named with its
section); a key of `[global]` in a service's section (or the reverse) is an error, since it
would be ignored where it stands. A section named like `[global]` or an installed service
(`[gloabl]`) is an error; one for a service that is not installed here (it may run on
another machine of the network) is warned about, naming the installed ones.

**Values.** An empty value means "not set": the default applies. Comments start with `;`
or `#` at the beginning of a line or after a space. Indented lines continue the value
above; an indented line that reads like `key = value` is an error, as it would not set that
key. Types: text (one line without control characters, but for a secret); whole numbers
(`42`, no unit); yes/no (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`); durations
(`30s`, `5m`, `1h`, `2d`, `1h30m`; a capital `M` is refused, as it may mean months, which
are written in days); URLs (`scheme://...`); lists (comma- or line-separated); enums (one of
the listed choices). A relative SQLite path in a database URL (`sqlite:///var/todo.db`) is
relative to the config file's directory. The file is UTF-8, with or without a byte-order
mark, and its lines may end as on Windows (CRLF).

**Secrets from files.** Any key `K` may be given as `K-file = /path/to/file` instead: the
file's content, without its trailing newline, is the value (at most 64 KiB, UTF-8). A
relative path is relative to the config file. Docker and Kubernetes secrets fit here:
`secret-key-file = /run/secrets/todo-secret-key`. Setting both `K` and `K-file` is an
error.

**Environment overrides.** `SRCORE__<SECTION>__<KEY>` overrides a key: upper case, `-`
written as `_`, and a sub-section's `::` written as `__` (`SRCORE__TODO__DATABASE_URL`,
`SRCORE__GLOBAL__SITE_NAME`, `SRCORE__TODO__MAIL__SMTP_HOST`). The environment wins over
the file. `SRCORE__<SECTION>__<KEY>_FILE` reads the value from a file (relative to the
working directory). A `SRCORE__` variable that names no key of the file is warned about,
and so is one in the wrong case (`SRCORE__todo__origin`: the environment is case-sensitive
and only upper-case names are read); one naming a `[global]` key for a service
(`SRCORE__TODO__LOG_LEVEL`), or the reverse, is an error, as in the file, and so is a value
that is not UTF-8. Two sections whose variables would be the same (`[a-b]` and `[a_b]` both
take `SRCORE__A_B__...`; `[a__b]` and `[a::b]` both take `SRCORE__A__B__...`) are an error
naming both: an override meant for one would apply to both. Service ids are written with
`-`, never `_`.

Each entry below gives the key's type, default, whether it is required or secret (secret
values are masked by `srcore config show`), and the environment variable that overrides it.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_text(key: Key) -> str:
    if key.type == "enum":
        return "one of " + ", ".join(f"`{choice}`" for choice in key.choices)
    return _TYPE_NAMES.get(key.type, key.type)


def _default_text(key: Key) -> str:
    text = format_value(key, key.default, redact=False)
    return f"`{_cell(text)}`" if text else "*(empty)*"


def _env_text(section: str, key: Key) -> str:
    if section == ANY_SERVICE:
        name = env_name("service", key.name).replace("__SERVICE__", "__<SERVICE>__", 1)
    else:
        name = env_name(section, key.name)
    return f"`{name}`"


def _key_entry(section: str, key: Key) -> list[str]:
    help_text = key.help.strip() or "*(no help text declared)*"
    return [
        f"### `{key.name}`",
        "",
        help_text,
        "",
        "| type | default | required | secret | environment variable |",
        "| --- | --- | --- | --- | --- |",
        f"| {_cell(_type_text(key))} | {_default_text(key)} | "
        f"{'yes' if key.required else 'no'} | {'yes' if key.secret else 'no'} | "
        f"{_env_text(section, key)} |",
        "",
    ]


class Manifest(Protocol):
    """What the reference reads of a service manifest (:class:`srcore.manifest.Manifest`).

    Named structurally: the config layer sits below the manifests that declare its keys.
    """

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def package(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def config(self) -> Mapping[str, Sequence[Key]]: ...


def _ordered(manifests: Iterable[Manifest]) -> list[Manifest]:
    # meta first (every other service logs in through it), then by id: stable output.
    return sorted(manifests, key=lambda m: (m.id != "meta", m.id))


def _sections(manifests: Iterable[Manifest]) -> list[tuple[str, str, Sequence[Key]]]:
    """``(section, heading tail, keys)`` in the order the reference lists them."""
    out: list[tuple[str, str, Sequence[Key]]] = [
        ("global", "shared by every service", GLOBAL_KEYS),
        (ANY_SERVICE, "every service", SERVICE_KEYS),
    ]
    for manifest in _ordered(manifests):
        for section, keys in manifest.config.items():
            if keys:
                out.append((section, manifest.name, keys))
    return out


def declared_entries(manifests: Iterable[Manifest]) -> list[tuple[str, str]]:
    """Every ``(section, key)`` the reference must have an entry for, in order."""
    return [(section, key.name) for section, _, keys in _sections(manifests) for key in keys]


def render_reference(manifests: Iterable[Manifest]) -> str:
    """The Markdown text of the config reference for srcore's keys and *manifests*' keys."""
    manifests = list(manifests)
    lines = [_INTRO]
    for section, tail, keys in _sections(manifests):
        lines += [f"## `[{section}]`: {tail}", ""]
        if section == "global":
            lines += [
                "Shared by every service. The whole section is optional: every key has a default.",
                "",
            ]
        elif section == ANY_SERVICE:
            lines += [
                "Every service's section has these keys, before the ones the service "
                "declares itself. In the environment variable, `<SERVICE>` is the service "
                "id in upper case (`SRCORE__TODO__ORIGIN`).",
                "",
            ]
        else:
            manifest = next(m for m in manifests if section in m.config)
            if "::" not in section:
                if manifest.description:
                    lines += [manifest.description.strip(), ""]
                lines += [
                    f"Declared in `{manifest.package}/service.yaml`. `[{section}]` also has "
                    "every key of [`[<service>]`](#service-every-service); a key declared "
                    "here too replaces that declaration.",
                    "",
                ]
            else:
                lines += [f"A sub-section declared in `{manifest.package}/service.yaml`.", ""]
        for key in keys:
            lines += _key_entry(section, key)
    return "\n".join(lines).rstrip("\n") + "\n"


def documented_entries(text: str) -> list[tuple[str, str]]:
    """The ``(section, key)`` entries a reference text has, read from its headings."""
    found: list[tuple[str, str]] = []
    section: str | None = None
    for line in text.splitlines():
        section_match = _SECTION_HEADING.match(line)
        if section_match:
            section = section_match.group(1)
            continue
        if line.startswith("## "):
            section = None
            continue
        key_match = _KEY_HEADING.match(line)
        if key_match and section is not None:
            found.append((section, key_match.group(1)))
    return found


def reference_problems(text: str, manifests: Iterable[Manifest]) -> list[str]:
    """What is wrong with the reference *text*; empty when it is exactly up to date.

    Each declared key without an entry and each entry without a declaration is named on
    its own line; any other difference from :func:`render_reference` gives one line.
    """
    manifests = list(manifests)
    declared = declared_entries(manifests)
    documented = documented_entries(text)
    problems = [
        f"[{section}] {key}: declared, but missing from the config reference"
        for section, key in declared
        if (section, key) not in documented
    ]
    problems += [
        f"[{section}] {key}: in the config reference, but no longer declared"
        for section, key in documented
        if (section, key) not in declared
    ]
    problems += [
        f"[{section}] {key}: documented more than once"
        for section, key in sorted(set(documented))
        if documented.count((section, key)) > 1
    ]
    if text != render_reference(manifests):
        problems.append("the config reference differs from what the declarations generate")
    if problems:
        problems.append(f"regenerate it: {REGENERATE}")
    return problems
