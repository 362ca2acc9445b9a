"""Identifier formats: a signal id is 1 to 64 characters that IB's ``orderRef`` carries unchanged."""

SIGNAL_ID_MAX_LEN = 64
SIGNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$"
