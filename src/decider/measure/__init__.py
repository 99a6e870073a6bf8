"""Measuring what personalization earns: what was shown (exposures), what followed
(outcomes), and the lift report over both."""
