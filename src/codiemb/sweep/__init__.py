"""Hydra's multirun callbacks (apart from Lightning's callbacks in :mod:`codiemb.callbacks`): the sweep summary
table and the fusion of a sweep's runs when it ends."""
