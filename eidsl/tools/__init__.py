"""Tools around specs and runs: formatter, highlighting, drawings, summaries, plots, schema."""
