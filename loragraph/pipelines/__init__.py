"""loragraph.pipelines"""
