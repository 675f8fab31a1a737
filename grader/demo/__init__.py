"""A sample submission with two typical mistakes, graded by ``grade --demo``."""
