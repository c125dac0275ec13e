"""The one rule for what a test needs from the machine: skip locally, fail under ``CI=true``."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

ON_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str, *, fix: str = "") -> NoReturn:
    """A test cannot run here because ``reason``: fail on CI, skip (saying so) elsewhere."""
    hint = f" ({fix})" if fix else ""
    if ON_CI:
        pytest.fail(f"CI=true but {reason}{hint}")
    pytest.skip(f"{reason}{hint}; CI fails instead")
