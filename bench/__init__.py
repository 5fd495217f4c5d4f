"""fedgate benchmarks: each module prints a table of ratios against a named peer."""
