"""The one synthetic organisation: the demo at 12 pairs, bench at scale."""
