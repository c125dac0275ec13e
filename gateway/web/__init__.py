"""Server-rendered pages: the public ones (and, later, the operator dashboard)."""
