"""Reading and writing the domain, one module per aggregate."""
