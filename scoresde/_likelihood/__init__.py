"""_likelihood"""
