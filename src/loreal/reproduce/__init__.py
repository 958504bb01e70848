"""``loreal reproduce``: the paper's grid of runs (benchmarks × baselines × φ × seeds × datasets), executed."""
