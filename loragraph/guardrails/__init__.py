"""loragraph.guardrails"""
