"""instsel: instruction-tuning data selection as a Dagster asset graph.

The library lives in the stage packages (``ingest``, ``features``, ``models``, ``scoring``,
``selection``, ``training``, ``evaluation``, ``quality``, ``sql``) and has no Dagster import;
``instsel_assets.defs`` holds the thin Dagster wiring.
"""

__version__ = "0.1.0"
