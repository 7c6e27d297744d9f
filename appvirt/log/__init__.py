"""The intercept log: one JSON object per line (JSON Lines)."""
