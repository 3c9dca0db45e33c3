"""Command implementations, one module per topic; `mentorpulse.cli` assembles them."""
