"""Accuracy of token-dropping methods on local VQA-style data."""
