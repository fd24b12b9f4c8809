"""loragraph.training"""
