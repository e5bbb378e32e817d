"""Classical-channel messages between ground station and satellite.

:mod:`.messages` holds the distillation messages (a msgspec tagged union) and
their codec; :mod:`.auth` authenticates frames on the link.
"""
