"""loragraph.adapters"""
