"""A module with import-time side effects; no test may ever import it (see test_payload).

When imported it writes the file named by env IMPORT_MARKER_FILE, if set.
"""

from __future__ import annotations

import os

_marker = os.environ.get("IMPORT_MARKER_FILE")
if _marker:
    with open(_marker, "w", encoding="utf-8") as handle:
        handle.write("imported\n")
