"""Reads an NUnit 2.6 TestResult.xml and prints each failure, then `N passed, N failed`.

Exit status 1 when any test failed, errored, was not run, or when no test ran at all (an empty run is a broken
build, not a pass).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def summarize(path: Path) -> tuple[int, int]:
    """Prints failures and the summary line; returns (passed, failed)."""
    if not path.exists():
        print(f"no NUnit result at {path}: the test run did not start")
        print("0 passed, 1 failed")
        return 0, 1
    root = ET.parse(path).getroot()
    passed = failed = 0
    for case in root.iter("test-case"):
        name = case.get("name", "?")
        executed = case.get("executed") == "True"
        if executed and case.get("success") == "True":
            passed += 1
            continue
        failed += 1
        message = case.findtext("./failure/message") or case.findtext("./reason/message") or "not run"
        print(f"FAILED {name}: {message.strip()}")
    print(f"{passed} passed, {failed} failed")
    return passed, failed


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: nunit_summary.py TestResult.xml", file=sys.stderr)
        return 2
    passed, failed = summarize(Path(sys.argv[1]))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
