"""Every module stays readable in one sitting (style.md rule 1): at most 400 lines."""

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "compress"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_short(path):
    assert len(path.read_text().splitlines()) <= 400
