"""Recipes that produce the bundled weights: the small reference backbone and the allocator (CAPO)."""
