"""The suite's float comparisons state their tolerance from the dtype and the size of the values.

`torch.allclose` / `torch.testing.assert_close` with fixed or default tolerances made the
suite pass on one CPU and fail on another (issue 16: atol 1e-8 on values that BLAS computes
1.2e-7 apart on AMD EPYC). Tests use `float_tolerance.assert_close(..., factor=...)` (or
`torch.equal` where the computation is literally the same); doctests spell out
`factor * eps * scale`. This test keeps it that way. A negative check
(`not torch.allclose(...)`: "these differ by far more than rounding") stays allowed.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXED = re.compile(r"(?<!not )\b(torch\.allclose|torch\.testing\.assert_close|np\.allclose|numpy\.allclose)\(")


def _offences(path: Path, doctest_only: bool):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        code = line.strip()
        if doctest_only and not code.startswith((">>>", "...")):
            continue
        if FIXED.search(code):
            yield f"{path.relative_to(ROOT)}:{number}: {code}"


def test_no_fixed_tolerance_comparisons():
    found = [o for p in sorted((ROOT / "tests").rglob("*.py")) if p.name != Path(__file__).name
             for o in _offences(p, doctest_only=False)]
    found += [o for p in sorted((ROOT / "speechbrain_cald").rglob("*.py")) for o in _offences(p, doctest_only=True)]
    assert not found, (
        "float comparisons with a fixed tolerance (use tests/float_tolerance.assert_close(actual, expected, "
        "factor=...) in tests, factor * eps * scale in doctests):\n" + "\n".join(found)
    )
