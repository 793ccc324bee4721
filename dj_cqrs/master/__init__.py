"""The master side: capture committed changes of models and turn them into messages."""
