"""loragraph.api"""
