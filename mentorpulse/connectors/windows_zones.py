"""Moved to :mod:`mentorpulse.connectors.zones`; kept only until microsoft.py imports it there.

Integrator: switch microsoft's ``to_iana`` import to ``mentorpulse.connectors.zones`` and
delete this module (issue 14, slice c2).
"""

from mentorpulse.connectors.zones import ZoneMapping, to_iana

__all__ = ["ZoneMapping", "to_iana"]
