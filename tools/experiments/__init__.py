"""The experiment suite: run grids of trainings, summarise and re-score them."""
