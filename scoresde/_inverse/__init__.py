"""_inverse"""
