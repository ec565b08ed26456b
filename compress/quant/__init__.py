"""Quantizers. rtn.py: round-to-nearest, pure tensor math (the primitive the sensitivity scorer uses)."""
