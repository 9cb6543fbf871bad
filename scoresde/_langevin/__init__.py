"""_langevin"""
