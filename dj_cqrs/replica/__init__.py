"""The replica side: apply messages to local copies of master models."""
