"""``srcore new-service``: generate a complete service package and add it to a network.

The generator is plain functions (:mod:`srcore.scaffold.generate` for the package,
:mod:`srcore.scaffold.netconfig` for the config file); the files it writes are templates
shipped inside srcore (``srcore/scaffold/skeleton/``). The click command lives in
:mod:`srcore.scaffold.cli`.
"""

from __future__ import annotations

from srcore.scaffold.generate import (
    NewService,
    ScaffoldError,
    check_name,
    create_service,
    render_files,
)
from srcore.scaffold.netconfig import AddedSection, add_service_section

__all__ = [
    "AddedSection",
    "NewService",
    "ScaffoldError",
    "add_service_section",
    "check_name",
    "create_service",
    "render_files",
]
