"""Placeholder: the pytest plugin lands with the testing toolkit (issue 3)."""
