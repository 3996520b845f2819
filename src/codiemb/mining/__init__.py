"""Hard-negative mining (:mod:`codiemb.mining.miner`, behind ``mine.py``) and the training run's cache of mined
negatives (:mod:`codiemb.mining.cache`, a dataset spec's ``mine:`` block). Mining may use the model and data
rooms; the data room never uses mining."""
