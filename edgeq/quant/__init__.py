"""Quantization: integer types, observers, statistics, recipes, the planner, the QuantPlan, the
simulator, weight quantization and the calibration engine.

Imports `edgeq.ir` and `edgeq.targets` only (never exporters, calibration sources, devices or the CLI).
"""
