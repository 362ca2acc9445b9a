"""Pre-trade risk: Kelly sizing, kill switches and pre-trade checks. Pure and synchronous, no I/O."""
