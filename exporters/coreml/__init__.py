"""Core ML ML-program artifacts for the Apple Neural Engine (`--target ane`).

`build` makes the MIL program from the graph and the plan; `check` re-reads the saved package
(weights decoded, op sequence); `evaluate` runs a saved program in numpy on Linux; `mac` runs
Core ML itself on macOS; `exporter` is the entry point.
"""
