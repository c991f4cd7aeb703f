"""Column names shared by every stage (docs/METHODS.md, "The record schema every stage shares").

One row per example. ``conversations`` is a list of ``{"role", "content"}`` turns with roles
``system`` / ``user`` / ``assistant``; ``instruction``, ``input`` and ``output`` are flat
convenience columns (for multi-turn rows: the first user turn and the first assistant reply).
In DuckDB ``conversations`` is a ``STRUCT(role, content)[]``; it comes back from DuckDB as a
numpy array of dicts, so code reading it must accept any sequence of mappings.
"""

from __future__ import annotations

ROLES = ("system", "user", "assistant")

# instruction_pool
POOL_COLUMNS = (
    "id",  # content hash of the normalised conversations (stable across sources and runs)
    "source",  # dataset name from data/sources.yaml
    "conversations",
    "instruction",
    "input",
    "output",
    "n_turns",  # number of user turns
    "category",  # task category when the source has one (Dolly), else ""
    "source_file",  # file the row was read from, relative to the data root
    "source_row",  # 0-based record index in that file (JSON list index or JSON Lines line number - 1)
)

# pool_quarantine: every input row that is not in instruction_pool is here, with its reason
QUARANTINE_COLUMNS = (
    "source",
    "source_file",
    "source_row",
    "kind",  # "invalid" (unusable row) or "duplicate" (exact duplicate of a kept row)
    "reason",  # human-readable reason, naming the field
    "duplicate_of",  # id of the kept row for kind == "duplicate", else ""
    "raw",  # the raw record as JSON text, truncated
)
