"""One figure module per analysis, named after it, and what they share (`common`)."""
