"""Embedded DNS for user-defined networks (installed as ``cnm.dns``); see the DNS issue."""
