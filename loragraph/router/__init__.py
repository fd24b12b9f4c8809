"""loragraph.router"""
