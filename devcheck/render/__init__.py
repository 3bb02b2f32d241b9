"""Renderings: the only place that turns facts and findings into text, JSON or Markdown."""
