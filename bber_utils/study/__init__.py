"""Study: many runs — the run registry, runners, search, summaries, findings and result tables."""
