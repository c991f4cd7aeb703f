"""The Dagster code location of instsel: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from instsel_assets.defs import build_definitions

defs = build_definitions()
