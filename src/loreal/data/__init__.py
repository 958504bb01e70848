"""Dassl-free data helpers: the dataset catalog, two-view transforms, synthetic datasets."""
