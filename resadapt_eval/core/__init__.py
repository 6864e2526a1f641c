"""The bottom layer: typed values, geometry and budgets, plan builders, registries and the protocols plugins implement."""
