"""The trainers that ship with the project; each registers itself on import."""
