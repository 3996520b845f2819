"""The run lifecycle: the run plan (the config read once), preflight, the run directory and its lock, resume,
fitting, delivery of the merged model, the loggers. Entered by :func:`codiemb.run.train.train`."""
