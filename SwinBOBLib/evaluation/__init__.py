"""Evaluation: segmentation metrics (Dice, HD95, NSD, bootstrap intervals) and the benchmark of a
checkpoint on a dataset (plain, TTA, ETTA). Imports inference, models, io and labels.
"""
