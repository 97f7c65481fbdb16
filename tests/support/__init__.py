"""Helpers shared by the tests: simulators, configs, clocks (not collected as tests)."""
