"""Sharing: model cards built from what a run folder records, and pushing a folder to the Hub in one commit.

May import every layer below it (reading from the Hub lives in ``core.hubio``).
"""
