"""LaTeX paper machinery: rendering, figures, claim check, compilation."""
