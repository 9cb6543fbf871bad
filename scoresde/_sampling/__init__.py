"""_sampling"""
