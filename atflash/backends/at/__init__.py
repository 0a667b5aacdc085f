"""backends/at"""
