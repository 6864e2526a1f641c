"""Recipes that produce the bundled weights: the small bundled backbone (tiny-bundled) and the allocator (CAPO)."""
