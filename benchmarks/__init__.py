"""botopt's benchmarks: each module measures before/after side by side in one run.

Run one with ``python -m botopt.benchmarks.<name> [--quick]`` or all with ``botopt bench``.
"""
