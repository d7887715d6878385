"""Command-line tools: genarena-train, -sample, -eval, -compare, -scaling."""
