"""``isolation="ray"``: each plugin instance is a Ray actor (install ``plugbridge[ray]``).

Nothing here is imported by the core: ``_load`` imports ``transport`` only when a plugin is
loaded with ``isolation="ray"``, and only these modules import Ray.
"""
