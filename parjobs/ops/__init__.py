"""File operations built on the parjobs core."""
