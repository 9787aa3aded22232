#!/usr/bin/env python3
"""Runs the Python package's tests (pytest) for ctest, on the freepruner
package installed in this interpreter's environment (`pip install .`).
Exits 77, which ctest reports as skipped, when the package, pytest or numpy
is not installed there."""
import os
import pathlib
import re
import sys

here = pathlib.Path(__file__).resolve().parent
try:
    import numpy  # noqa: F401
    import pytest
except ImportError as e:
    print(f"{sys.executable} lacks {e.name} (pip install pytest numpy): the Python package's tests are skipped")
    sys.exit(77)
try:
    import freepruner
except ImportError:
    print(f"freepruner is not installed for {sys.executable} (pip install . from the repository root, "
          "see docs/python.md): the Python package's tests are skipped")
    sys.exit(77)
header = (here.parents[1] / "include" / "freepruner" / "version.hpp").read_text()
version = re.search(r'FREEPRUNER_VERSION_STRING "([^"]+)"', header).group(1)
print(f"freepruner {freepruner.__version__} from {os.path.dirname(freepruner.__file__)}")
if freepruner.__version__ != version:
    print(f"the installed package is {freepruner.__version__}, these headers are {version}: pip install . again")
    sys.exit(1)
sys.exit(pytest.main([str(here), "-q", "-p", "no:cacheprovider", "-rs"]))
