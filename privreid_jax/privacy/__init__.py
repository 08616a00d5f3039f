"""Privacy tools: differentially private gallery release (`dp`) and privacy attacks."""
