"""Print the requirements of this project and of the given extras, one a line, read from
pyproject.toml: the Makefile installs them before the project itself, so that two venvs can be
bootstrapped at once while only the project's own build (which writes into the tree) waits its turn.

    python scripts/requirements.py legacy,keras3,test
"""

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    """The base dependencies, then each extra's, in pyproject.toml's order.

    Raises:
        SystemExit: an extra pyproject.toml does not define (named).
    """
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}: pyproject.toml defines {', '.join(sorted(optional))}")
    return [*project["dependencies"], *(line for extra in extras for line in optional[extra])]


if __name__ == "__main__":
    print("\n".join(requirements([extra for extra in sys.argv[1].split(",") if extra])))
