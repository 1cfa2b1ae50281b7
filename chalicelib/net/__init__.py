"""Network adapters shared by features that talk to hosts outside the platform."""
