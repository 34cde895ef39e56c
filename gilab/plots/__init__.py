"""One-call matplotlib figures: fits (``gilab.plots.fitting``) and placement (``gilab.plots.placement``)."""
