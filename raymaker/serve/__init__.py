"""Hosting on Ray Serve (endpoints, production variants, content types) and batch transform."""
