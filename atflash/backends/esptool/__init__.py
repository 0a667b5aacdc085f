"""backends/esptool"""
